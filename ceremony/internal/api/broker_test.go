package api

import (
	"sync"
	"testing"
	"time"
)

func TestBrokerManySubscribers(t *testing.T) {
	b := NewBroker()
	const subs, events = 5, 20
	var wg sync.WaitGroup
	got := make([][]uint64, subs)
	for i := 0; i < subs; i++ {
		s := b.Subscribe()
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for ev := range s.C() {
				got[i] = append(got[i], ev.Seq)
				if ev.Type == EventOutcome {
					s.Close()
				}
			}
		}(i)
	}
	for i := 0; i < events-1; i++ {
		b.Publish(Event{Type: EventProgress, CardsDone: i})
	}
	b.Publish(Event{Type: EventOutcome})
	wg.Wait()
	for i, seqs := range got {
		if len(seqs) != events {
			t.Errorf("subscriber %d got %d events, want %d", i, len(seqs), events)
		}
		for k := range seqs {
			if seqs[k] != uint64(k+1) {
				t.Errorf("subscriber %d event %d has seq %d", i, k, seqs[k])
				break
			}
		}
	}
}

// A subscriber that never reads must neither block the sender nor miss the latest event.
func TestBrokerSlowSubscriberDoesNotBlock(t *testing.T) {
	b := NewBroker()
	slow := b.Subscribe()
	fast := b.Subscribe()
	var fastGot int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range fast.C() {
			fastGot++
		}
	}()
	const n = SubscriptionBuffer * 10
	finished := make(chan struct{})
	go func() {
		for i := 1; i <= n; i++ {
			b.Publish(Event{Type: EventProgress, CardsDone: i})
		}
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("publish blocked on a slow subscriber")
	}
	if slow.Dropped() == 0 {
		t.Fatal("slow subscriber dropped nothing")
	}
	var last Event
	for len(slow.C()) > 0 {
		last = <-slow.C()
	}
	if last.CardsDone != n {
		t.Fatalf("slow subscriber's last event has CardsDone %d, want the latest (%d)", last.CardsDone, n)
	}
	fast.Close()
	<-done
	if uint64(fastGot)+fast.Dropped() != n {
		t.Fatalf("fast subscriber got %d + dropped %d, want %d", fastGot, fast.Dropped(), n)
	}
}

func TestBrokerSubscribeGetsLatestAndUnsubscribe(t *testing.T) {
	b := NewBroker()
	b.Publish(Event{Type: EventPrompt, Display: "Insert 1. card press OK/Cancel"})
	s := b.Subscribe()
	ev := <-s.C()
	if ev.Display != "Insert 1. card press OK/Cancel" {
		t.Fatalf("late subscriber first got %+v", ev)
	}
	s.Close()
	s.Close() // twice is fine
	if _, ok := <-s.C(); ok {
		t.Fatal("channel open after Close")
	}
	b.Publish(Event{}) // no panic on a closed subscription
	b.Close()
	s2 := b.Subscribe()
	if _, ok := <-s2.C(); ok {
		t.Fatal("subscription on a closed broker is open")
	}
}
