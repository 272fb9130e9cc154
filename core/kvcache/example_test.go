package kvcache_test

import (
	"fmt"

	"github.com/dsgate/dsgate/core/kvcache"
)

func Example() {
	pool, _ := kvcache.New(8, 4) // 8 blocks of 4 positions
	turn1 := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9}

	a := pool.NewTable("tenant-a")
	_ = pool.Reserve(a, len(turn1)) // 3 blocks
	pool.Commit(a, turn1, len(turn1))
	pool.Release(a) // the two full blocks stay cached

	turn2 := append(turn1, 10, 11, 12)
	b := pool.NewTable("tenant-a")
	fmt.Println("cached positions:", pool.Match(b, turn2))
	c := pool.NewTable("tenant-b")
	fmt.Println("other tenant:", pool.Match(c, turn2))
	pool.Release(b)
	fmt.Printf("%+v\n", pool.Stats())
	// Output:
	// cached positions: 8
	// other tenant: 0
	// {Used:0 Cached:2 Free:6}
}
