package lru_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/lru"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLeastRecentlyUsedGoesFirst(t *testing.T) {
	c := lru.New[string, int](2)
	c.Add("a", 1)
	c.Add("b", 2)
	v, ok := c.Get("a") // a is now the most recently used
	require.True(t, ok)
	require.Equal(t, 1, v)
	c.Add("c", 3)

	_, ok = c.Get("b")
	require.False(t, ok, "b was used least recently")
	for key, want := range map[string]int{"a": 1, "c": 3} {
		v, ok := c.Get(key)
		require.True(t, ok, key)
		require.Equal(t, want, v, key)
	}
	require.Equal(t, 2, c.Len())
}

func TestAddReplacesAndRefreshes(t *testing.T) {
	c := lru.New[string, int](2)
	c.Add("a", 1)
	c.Add("b", 2)
	c.Add("a", 10) // replaces, and makes a the most recently used
	c.Add("c", 3)

	v, ok := c.Get("a")
	require.True(t, ok)
	require.Equal(t, 10, v)
	_, ok = c.Get("b")
	require.False(t, ok)
	require.Equal(t, 2, c.Len())
}

func TestSizeAtLeastOne(t *testing.T) {
	c := lru.New[int, int](0)
	c.Add(1, 1)
	c.Add(2, 2)
	require.Equal(t, 1, c.Len())
	v, ok := c.Get(2)
	require.True(t, ok)
	require.Equal(t, 2, v)
}

func TestConcurrentUseStaysBounded(t *testing.T) {
	c := lru.New[string, int](16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				key := fmt.Sprint(g, "-", i%40)
				if v, ok := c.Get(key); ok && v != i%40 {
					t.Errorf("%s holds %d, want %d", key, v, i%40)
					return
				}
				c.Add(key, i%40)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 16, c.Len())
}
