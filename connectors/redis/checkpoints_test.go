package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/replay"
)

// TestCheckpoints: a checkpoint saved is loaded back and listed; one not
// saved is replay.ErrNoCheckpoint; a corrupt one is an error on Load and
// left out of List.
func TestCheckpoints(t *testing.T) {
	r := testenv.NewRedis(t)
	client := r.Client(t)
	cps := NewCheckpoints(client, r.Prefix, time.Hour)
	ctx := testenv.Context(t, 10*time.Second)
	if _, err := cps.Load(ctx, "none"); !errors.Is(err, replay.ErrNoCheckpoint) {
		t.Fatalf("Load of nothing = %v", err)
	}
	cp := &replay.Checkpoint{Plan: replay.Plan{ID: "r-1", Topic: "q", Ranges: []replay.Range{{Partition: 0, End: 5}}}, Next: map[int]int64{0: 3}}
	if err := cps.Save(ctx, cp); err != nil {
		t.Fatal(err)
	}
	got, err := cps.Load(ctx, "r-1")
	if err != nil || got.Next[0] != 3 || got.Plan.Topic != "q" {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	if err := client.Set(context.Background(), cps.Key("r-2"), "{not json", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := cps.Load(ctx, "r-2"); err == nil {
		t.Fatal("a corrupt checkpoint loads")
	}
	list, err := cps.List(ctx)
	if err != nil || len(list) != 1 || list[0].Plan.ID != "r-1" {
		t.Fatalf("List = %v, %v; want r-1's only", list, err)
	}
}
