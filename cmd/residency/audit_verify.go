package main

import "context"

func runAuditVerify(ctx context.Context, e env) int { return exitUsage }
