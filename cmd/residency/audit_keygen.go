package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/residency-router/residency/audit"
)

// runAuditKeygen is `residency audit keygen`: it writes, into --out, the
// log's key pair (--origin: log.key 0600, log.pub), a witness pair
// (--witness: witness-NAME.key 0600, witness-NAME.pub) and/or an
// attestation secret (--attest ID: attest-ID.key 0600, 32 random bytes,
// hex). It never replaces a file.
func runAuditKeygen(e env) int {
	fs := newFlags(e, "audit keygen", "audit keygen [--origin NAME] [--witness NAME] [--attest ID] --out DIR")
	origin := fs.String("origin", "", "make the log's key pair for the log named `NAME` (e.g. residency.example.com/audit): log.key, log.pub")
	witness := fs.String("witness", "", "make a witness key pair for the witness named `NAME`: witness-NAME.key, witness-NAME.pub")
	attest := fs.String("attest", "", "make an attestation secret with key id `ID` (32 random bytes, hex): attest-ID.key")
	out := fs.String("out", "", "write the files into `DIR` (created 0700 if missing; existing files are never replaced)")
	o := addOutput(fs)
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 || *out == "" || (*origin == "" && *witness == "" && *attest == "") {
		fs.Usage()
		return exitUsage
	}
	if strings.ContainsAny(*witness, "/\\") || strings.ContainsAny(*attest, "/\\") {
		return fail(e, "audit keygen", usagef("--witness and --attest names must not contain a path separator"))
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fail(e, "audit keygen", usagef("--out: %v", err))
	}
	var written []string
	put := func(name string, data []byte, secret bool) error {
		p := filepath.Join(*out, name)
		w := writePublic
		if secret {
			w = writeSecret
		}
		if err := w(p, data); err != nil {
			return usagef("--out: %v", err)
		}
		written = append(written, p)
		return nil
	}
	run := func() error {
		if *origin != "" {
			skey, vkey, err := audit.GenerateLogKey(*origin)
			if err != nil {
				return usagef("--origin: %v", err)
			}
			if err := put("log.key", []byte(skey+"\n"), true); err != nil {
				return err
			}
			if err := put("log.pub", []byte(vkey+"\n"), false); err != nil {
				return err
			}
		}
		if *witness != "" {
			skey, vkey, err := audit.GenerateWitnessKey(*witness)
			if err != nil {
				return usagef("--witness: %v", err)
			}
			if err := put("witness-"+*witness+".key", []byte(skey+"\n"), true); err != nil {
				return err
			}
			if err := put("witness-"+*witness+".pub", []byte(vkey+"\n"), false); err != nil {
				return err
			}
		}
		if *attest != "" {
			var k [32]byte
			if _, err := rand.Read(k[:]); err != nil {
				return err
			}
			p := "attest-" + *attest + ".key"
			if err := put(p, []byte(hex.EncodeToString(k[:])+"\n"), true); err != nil {
				return err
			}
			if _, err := audit.LoadAttestKey(*attest, filepath.Join(*out, p)); err != nil {
				return usagef("--attest: %v", err)
			}
		}
		return nil
	}
	if err := run(); err != nil {
		return fail(e, "audit keygen", err)
	}
	if o.JSON() {
		_ = writeJSON(e.stdout, map[string]any{"written": written})
		return exitOK
	}
	for _, p := range written {
		fmt.Fprintln(e.stdout, p)
	}
	return exitOK
}
