package bus

import (
	"context"
	"errors"
	"testing"

	"github.com/ward-idp/ward/internal/model"
)

func TestLocalDeliversInOrderAndJoinsErrors(t *testing.T) {
	b := NewLocal()
	var got []string
	b.Subscribe("a", func(_ context.Context, e *model.Event) error { got = append(got, "a:"+string(e.Type)); return nil })
	unsub := b.Subscribe("b", func(context.Context, *model.Event) error { return errors.New("disk full") })
	err := b.Publish(context.Background(), &model.Event{Type: model.EventUserCreated})
	if err == nil || len(got) != 1 || got[0] != "a:user.created" {
		t.Fatalf("Publish = %v, delivered %v", err, got)
	}
	unsub()
	if err := b.Publish(context.Background(), &model.Event{Type: model.EventUserDeleted}); err != nil || len(got) != 2 {
		t.Fatalf("after unsubscribe: %v, %v", err, got)
	}
}

func TestOriginFillsOnlyEmptyFields(t *testing.T) {
	b := NewLocal()
	rec := &Recorder{}
	b.Subscribe("rec", rec.Handle)
	ctx := WithOrigin(context.Background(), Origin{IP: "203.0.113.9", UserAgent: "ua", CorrelationID: "c1"})
	b.Publish(ctx, &model.Event{Type: model.EventUserUpdated})
	b.Publish(ctx, &model.Event{Type: model.EventUserUpdated, IP: "198.51.100.1"})
	b.Publish(context.Background(), &model.Event{Type: model.EventUserUpdated})
	evs := rec.Events()
	if evs[0].IP != "203.0.113.9" || evs[0].UserAgent != "ua" || evs[0].CorrelationID != "c1" {
		t.Errorf("origin not filled: %+v", evs[0])
	}
	if evs[1].IP != "198.51.100.1" {
		t.Errorf("explicit IP overwritten: %+v", evs[1])
	}
	if evs[2].IP != "" {
		t.Errorf("origin invented without a request: %+v", evs[2])
	}
}
