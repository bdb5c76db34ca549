// Package check tests what the repository ships for deployment, from
// outside the residency module and with the real binary:
//
//   - the Dockerfile (parsed with BuildKit's own parser): multi-stage,
//     pinned base images, a static -trimpath build with the version
//     stamped, a numeric non-root USER, no remote ADD; and the binary built
//     exactly as its build stage builds it, from exactly the build context
//     .dockerignore leaves, is static (no ELF interpreter, no DT_NEEDED)
//     and prints the stamped version;
//   - the Kubernetes manifests in deploy/kubernetes, decoded strictly with
//     the Kubernetes API types (and the prometheus-operator's for the
//     ServiceMonitor), cross-checked against the config and the binary, and
//     run: each Deployment's container arguments, with its config, become
//     ready on the dev stack and stop cleanly on SIGTERM;
//   - the Prometheus alert rules (rulefmt, PromQL parser) and the Grafana
//     dashboard, and that every metric they name is one the running router
//     and sinks export.
//
// It is a module of its own so that the residency module does not depend on
// the Kubernetes and Prometheus libraries. `make test` runs it after the
// residency module's tests; alone: `cd deploy/check && go test ./...` with
// the dev stack's variables set (see README, "The dev stack").
package check
