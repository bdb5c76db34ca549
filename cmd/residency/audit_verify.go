package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// verifyFlags are the flags of `residency audit verify`.
type verifyFlags struct {
	cfgPath, logKey, since, until, previous, checkpoint, output string
	offsets, witnesses                                          listFlag
	allowGaps, noStores                                         bool
}

// runAuditVerify is `residency audit verify`: it checks the log in
// audit.bucket (signature, integrity, that it extends
// --previous-checkpoint), then every offset of the ingest topics against
// the leaves (completeness), every record of the pinned, quarantine,
// dead-letter and sink quarantine topics against the leaves that wrote it
// and their attestation tags (placement), and every row of the sinks'
// stores against the sink leaves (stores). It reads only Kafka, the stores
// and the bucket (rulesets come from the log's ruleset leaves). Exit 0
// when nothing was found, 1 on findings, 2 on bad usage or config, 3 when
// something could not be read (the message says what).
func runAuditVerify(ctx context.Context, e env) int {
	fs := newFlags(e, "audit verify", "audit verify --config FILE [--log-key FILE] [--since T --until T | --offsets TOPIC/PARTITION/FROM-TO ...] [--previous-checkpoint FILE] [--output text|json|html]")
	var f verifyFlags
	fs.StringVar(&f.cfgPath, "config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	fs.StringVar(&f.logKey, "log-key", "", "the log's public key `file` (default audit.log_public_key_file)")
	fs.StringVar(&f.since, "since", "", "verify records produced at or after `T` (RFC 3339; default: the topics' start)")
	fs.StringVar(&f.until, "until", "", "verify records produced before `T` (RFC 3339; default: now)")
	fs.Var(&f.offsets, "offsets", "verify only these ingest offsets, `TOPIC/PARTITION/FROM-TO` (TO exclusive; repeatable)")
	fs.StringVar(&f.previous, "previous-checkpoint", "", "the signed checkpoint `file` verified last time: the log must extend it")
	fs.StringVar(&f.checkpoint, "checkpoint", "", "verify the log at this signed checkpoint `file` (default: the latest in the bucket)")
	fs.Var(&f.witnesses, "witness-key", "require a cosignature by the witness whose public key is in `FILE` (repeatable)")
	fs.BoolVar(&f.allowGaps, "allow-gaps", false, "an ingest offset with neither record nor leaf is a note, not a finding (compaction; transaction markers never need one)")
	fs.BoolVar(&f.noStores, "no-stores", false, "skip the stores (rows of the sinks[] stores)")
	fs.StringVar(&f.output, "output", "text", "report format: text, json or html")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	rep, err := auditVerify(ctx, e, &f)
	if err != nil {
		return auditFail(e, "audit verify", err)
	}
	var werr error
	switch f.output {
	case "json":
		werr = rep.WriteJSON(e.stdout)
	case "html":
		werr = rep.WriteHTML(e.stdout)
	default:
		werr = rep.WriteTable(e.stdout)
	}
	if werr != nil {
		return auditFail(e, "audit verify", werr)
	}
	if !rep.OK() {
		return exitFailure
	}
	return exitOK
}

// ingestRange is one --offsets value.
type ingestRange struct {
	topic     string
	partition int32
	from, to  int64
}

func parseOffsets(vals []string) ([]ingestRange, error) {
	var out []ingestRange
	for _, v := range vals {
		i := strings.LastIndexByte(v, '/')
		j := -1
		if i > 0 {
			j = strings.LastIndexByte(v[:i], '/')
		}
		from, to, ok := strings.Cut(v[max(i, 0)+1:], "-")
		if j <= 0 || !ok {
			return nil, usagef("--offsets %q: want TOPIC/PARTITION/FROM-TO", v)
		}
		p, e1 := strconv.ParseInt(v[j+1:i], 10, 32)
		a, e2 := strconv.ParseInt(from, 10, 64)
		b, e3 := strconv.ParseInt(to, 10, 64)
		if e1 != nil || e2 != nil || e3 != nil || p < 0 || a < 0 || b < a {
			return nil, usagef("--offsets %q: partition, FROM and TO must be integers, 0 <= FROM <= TO", v)
		}
		out = append(out, ingestRange{topic: v[:j], partition: int32(p), from: a, to: b})
	}
	return out, nil
}

func parseTime(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--%s %q: want an RFC 3339 time, e.g. 2026-01-02T15:04:05Z", flag, s)
	}
	return t, nil
}

func readFlagFile(flag, path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--%s: %v", flag, err)
	}
	return b, nil
}

// readCheckpointFlag reads the checkpoint file of --flag: a file that is
// not a signed checkpoint note at all is bad usage (exit 2, naming the
// flag); one that is, signed by another key, is left to the verification
// (bad_signature, exit 1).
func readCheckpointFlag(flag, path string) ([]byte, error) {
	b, err := readFlagFile(flag, path)
	if err != nil || b == nil {
		return b, err
	}
	if err := audit.CheckCheckpointFormat(b); err != nil {
		return nil, usagef("--%s %s: %v", flag, path, err)
	}
	return b, nil
}

func auditVerify(ctx context.Context, e env, f *verifyFlags) (*audit.Report, error) {
	switch f.output {
	case "text", "json", "html":
	default:
		return nil, usagef("--output %q is not text, json or html", f.output)
	}
	since, err := parseTime("since", f.since)
	if err != nil {
		return nil, err
	}
	until, err := parseTime("until", f.until)
	if err != nil {
		return nil, err
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return nil, usagef("--until %s is not after --since %s", f.until, f.since)
	}
	ranges, err := parseOffsets(f.offsets)
	if err != nil {
		return nil, err
	}
	if len(ranges) > 0 && (f.since != "" || f.until != "") {
		return nil, usagef("--offsets and --since/--until exclude each other")
	}
	prev, err := readCheckpointFlag("previous-checkpoint", f.previous)
	if err != nil {
		return nil, err
	}
	at, err := readCheckpointFlag("checkpoint", f.checkpoint)
	if err != nil {
		return nil, err
	}
	var witnesses []string
	for _, w := range f.witnesses {
		b, err := readFlagFile("witness-key", w)
		if err != nil {
			return nil, err
		}
		k := string(trimSpace(b))
		if err := audit.CheckWitnessKey(k); err != nil {
			return nil, usagef("--witness-key %s: %v", w, err)
		}
		witnesses = append(witnesses, k)
	}
	cfg, err := auditConfig(f.cfgPath)
	if err != nil {
		return nil, err
	}
	vkey, err := logPublicKey(cfg, f.logKey)
	if err != nil {
		return nil, err
	}
	var att *audit.AttestVerifier
	if len(cfg.Audit.Attestation.VerifyKeys) > 0 {
		if att, err = cfg.Audit.Verifier(); err != nil {
			return nil, exitError{code: exitUsage, err: config.FieldError("audit.attestation.verify_keys", err)}
		}
	}
	store, closeStore, err := openAuditBucket(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer closeStore()
	progress := func(stage string, done int64) {
		fmt.Fprintf(e.stderr, "residency audit verify: %s: %d\n", stage, done)
	}
	vc := audit.VerifyConfig{LogKey: vkey, Previous: prev, Checkpoint: at, Witnesses: witnesses,
		IngestCluster: cfg.Kafka.IngestCluster, Attestation: att, AllowGaps: f.allowGaps, Progress: progress,
		PolicyOf: policyOf}
	if !since.IsZero() {
		vc.Since = since.UnixMilli()
	}
	if !until.IsZero() {
		vc.Until = until.UnixMilli()
	}
	fmt.Fprintln(e.stderr, "residency audit verify: reading the log")
	v, err := audit.VerifyLog(ctx, store, vc)
	if err != nil {
		return nil, logOpenError(err)
	}
	// The regions' pinned topics, from the log's ruleset leaves and the
	// leaves' destinations.
	pinned, err := logTopics(ctx, store, vkey, at)
	if err != nil && v.Report().OK() {
		return nil, logOpenError(err)
	}
	if !v.Report().OK() {
		// The log itself does not verify: nothing else can be trusted.
		return v.Report(), nil
	}
	clusters := map[string]kafka.Cluster{}
	for name, c := range cfg.Kafka.Clusters {
		clusters[name] = c
	}
	src, err := kafka.NewRecordSource(clusters)
	if err != nil {
		return nil, exitError{code: exitUsage, err: err}
	}
	defer src.Close()
	// The ingest topics are read as the router reads them: read_committed,
	// an aborted record is no event and needs no leaf.
	src.IngestIsolationLevel = cfg.Kafka.IsolationLevel
	src.OnUnstable = func(topic string, partition int32, from, to int64) {
		fmt.Fprintf(e.stderr, "residency audit verify: %s/%d: offsets %d to %d are in a transaction still open (read_committed, past the last stable offset): not checked this time\n",
			topic, partition, from, to-1)
	}
	ing := cfg.Kafka.IngestCluster
	topicRanges := func(cluster, topic string, role audit.Role) ([]audit.TopicRange, error) {
		rs, err := src.Ranges(ctx, cluster, topic, role, since, until)
		if err != nil {
			return nil, unreadable(fmt.Sprintf("topic %s on cluster %s", topic, cluster), err)
		}
		return rs, nil
	}
	// Completeness: the ingest topics.
	var ingest []audit.TopicRange
	if len(ranges) > 0 {
		for _, r := range ranges {
			ingest = append(ingest, audit.TopicRange{Cluster: ing, Topic: r.topic, Role: audit.RoleIngest, Partition: r.partition, From: r.from, To: r.to})
		}
	} else {
		for _, t := range cfg.Router.IngestTopics {
			rs, err := topicRanges(ing, t, audit.RoleIngest)
			if err != nil {
				return nil, err
			}
			ingest = append(ingest, rs...)
		}
	}
	fmt.Fprintln(e.stderr, "residency audit verify: reading the ingest topics")
	if err := v.VerifyCompleteness(ctx, ingest, src); err != nil {
		return nil, unreadable("the ingest topics", err)
	}
	// Placement: pinned, quarantine, dead-letter, sink quarantine topics.
	type ct struct {
		cluster, topic string
		role           audit.Role
	}
	var others []ct
	seen := map[[2]string]bool{}
	add := func(c ct) {
		if c.topic == "" || seen[[2]string{c.cluster, c.topic}] {
			return
		}
		seen[[2]string{c.cluster, c.topic}] = true
		others = append(others, c)
	}
	for _, p := range pinned {
		add(ct{p[0], p[1], audit.RolePinned})
	}
	for _, sc := range cfg.Sinks {
		if sc.Topic != "" && sc.Cluster != "" {
			add(ct{sc.Cluster, sc.Topic, audit.RolePinned})
		}
	}
	add(ct{ing, cfg.Router.QuarantineTopic, audit.RoleQuarantine})
	add(ct{ing, cfg.Router.DeadLetterTopic, audit.RoleDeadLetter})
	for _, sc := range cfg.Sinks {
		add(ct{cmp.Or(sc.QuarantineCluster, ing), sc.QuarantineTopic, audit.RoleSinkQuarantine})
	}
	var place []audit.TopicRange
	for _, c := range others {
		if _, ok := clusters[c.cluster]; !ok {
			return nil, exitError{code: exitUsage, err: fmt.Errorf("kafka.clusters: the log names cluster %q (topic %s), which the config lacks", c.cluster, c.topic)}
		}
		rs, err := topicRanges(c.cluster, c.topic, c.role)
		if err != nil {
			return nil, err
		}
		place = append(place, rs...)
	}
	fmt.Fprintln(e.stderr, "residency audit verify: reading the pinned, quarantine and dead-letter topics")
	if err := v.VerifyPlacement(ctx, place, src); err != nil {
		return nil, unreadable("the pinned, quarantine and dead-letter topics", err)
	}
	// Stores.
	if !f.noStores && len(cfg.Sinks) > 0 {
		dec, err := rowDecoder(cfg)
		if err != nil {
			return nil, err
		}
		rows := storeRows{read: map[string]func(context.Context, string, audit.EventDecoder, func(*audit.Row) error) error{},
			cluster: map[string]string{}, decode: dec}
		var checks []audit.StoreCheck
		for i := range cfg.Sinks {
			sc := &cfg.Sinks[i]
			cluster := sc.Cluster
			if cluster == "" {
				for _, p := range pinned {
					if p[2] == sc.Region {
						cluster = p[0]
					}
				}
			}
			field := cfg.SinkField(sc)
			switch {
			case sc.Postgres != nil:
				s, err := postgres.Open(ctx, *sc.Postgres)
				if errors.Is(err, postgres.ErrConfig) {
					return nil, config.FieldError(field+".postgres", err)
				}
				if err != nil {
					return nil, unreadable("store "+sc.Store, err)
				}
				defer s.Close(context.Background())
				rows.read[sc.Store] = s.AuditRows
			case sc.ObjectStore != nil:
				s, err := objectstore.Open(ctx, *sc.ObjectStore)
				if errors.Is(err, objectstore.ErrConfig) {
					return nil, config.FieldError(field+".objectstore", err)
				}
				if err != nil {
					return nil, unreadable("store "+sc.Store, err)
				}
				defer s.Close(context.Background())
				rows.read[sc.Store] = s.AuditRows
			}
			checks = append(checks, audit.StoreCheck{Store: sc.Store, Cluster: cluster})
			rows.cluster[sc.Store] = cluster
		}
		fmt.Fprintln(e.stderr, "residency audit verify: reading the stores")
		if err := v.VerifyStores(ctx, checks, rows); err != nil {
			return nil, unreadable("the stores", err)
		}
	}
	rep := v.Report()
	switch {
	case len(ranges) > 0:
		rep.Window = "ingest offsets " + strings.Join(f.offsets, ", ")
	case f.since != "" || f.until != "":
		rep.Window = fmt.Sprintf("records produced in [%s, %s)", cmp.Or(f.since, "start"), cmp.Or(f.until, "now"))
	default:
		rep.Window = "everything the topics hold"
	}
	return rep, nil
}

// storeRows is the audit.RowSource over the stores, by store name.
type storeRows struct {
	read    map[string]func(ctx context.Context, cluster string, dec audit.EventDecoder, fn func(*audit.Row) error) error
	cluster map[string]string // the cluster of each store's pinned topic
	decode  audit.EventDecoder
}

// Rows calls fn for each row of store.
func (s storeRows) Rows(ctx context.Context, store string, fn func(*audit.Row) error) error {
	r, ok := s.read[store]
	if !ok {
		return fmt.Errorf("store %q is not configured", store)
	}
	return r(ctx, s.cluster[store], s.decode, fn)
}

// rowDecoder returns the decoder the stores' rows are checked with: each
// row's raw value decoded as a sink decodes it (schemas' DecodeJSONFast,
// the sink's transcoding), with the config's schemas settings (the
// routers': catalogue, raw schemas, framings, registry) and the framing of
// the row's source_topic, so that `audit verify` compares event_id,
// user_id and event with what the sink writes for the value. A value that
// does not decode (the verifier's settings lack what the sink had), or
// whose framing needs a schema registry out of reach, is
// audit.ErrUndecodable: verify reads only Kafka, the stores and the log,
// so such rows keep their value, region, jurisdiction and ruleset checks,
// and the report says how many were not decoded and why. Once the registry
// failed for a source topic, its later rows are not sent to it again (each
// attempt waits out the registry's retries).
func rowDecoder(cfg *config.Config) (audit.EventDecoder, error) {
	x, err := schemas.NewExtractor(cfg.Schemas)
	if err != nil {
		return nil, config.FieldError("schemas", err)
	}
	var mu sync.Mutex
	down := map[string]error{} // source topic -> the registry's failure
	return func(ctx context.Context, sourceTopic string, raw []byte) (string, string, []byte, error) {
		mu.Lock()
		failed := down[sourceTopic]
		mu.Unlock()
		if failed != nil {
			return "", "", nil, failed
		}
		doc, keys, err := x.DecodeJSONFast(ctx, sourceTopic, raw)
		switch {
		case ctx.Err() != nil:
			return "", "", nil, err
		case errors.Is(err, schemas.ErrRegistryUnavailable):
			failed = fmt.Errorf("%w: source topic %s: %w", audit.ErrUndecodable, sourceTopic, err)
			mu.Lock()
			down[sourceTopic] = failed
			mu.Unlock()
			return "", "", nil, failed
		case err != nil:
			return "", "", nil, fmt.Errorf("%w: %w", audit.ErrUndecodable, err)
		}
		return keys.EventID, keys.UserID, doc, nil
	}, nil
}

// logTopics returns the pinned topics the log knows of, as {cluster,
// topic, region}: the regions of its ruleset leaves and the destinations
// of its route leaves.
func logTopics(ctx context.Context, store audit.Store, vkey string, at []byte) ([][3]string, error) {
	var lg *audit.Log
	var err error
	if at != nil {
		lg, err = audit.OpenLogAt(ctx, store, vkey, at)
	} else {
		lg, err = audit.OpenLog(ctx, store, vkey)
	}
	if err != nil {
		return nil, err
	}
	var out [][3]string
	seen := map[[3]string]bool{}
	add := func(k [3]string) {
		if k[1] != "" && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	err = lg.Scan(ctx, nil, func(_ int64, b []byte) error {
		l, err := audit.ParseLeaf(b)
		if err != nil {
			return nil
		}
		if l.Kind == audit.KindRuleset && l.Policy != nil {
			for _, r := range l.Policy.Regions {
				add([3]string{r.Cluster, r.Topic, r.Name})
			}
		}
		if l.Kind == audit.KindRoute && l.Decision == audit.Routed {
			add([3]string{l.Dest.Cluster, l.Dest.Topic, l.Region})
		}
		return nil
	})
	return out, err
}

// policyOf derives the policy a ruleset leaf's content defines, as the
// router built it (auditwire.Policy), so `audit verify` checks the logged
// policy against the ruleset instead of trusting it (ruleset_mismatch).
func policyOf(content []byte) (*audit.Policy, error) {
	rs, err := rules.Parse(content)
	if err != nil {
		return nil, err
	}
	return auditwire.Policy(rs), nil
}
