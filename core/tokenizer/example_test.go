package tokenizer_test

import (
	"fmt"
	"os"

	"github.com/dsgate/dsgate/core/tokenizer"
)

func Example() {
	tk, err := tokenizer.Load(tokenizer.DefaultDir(map[string]string{"HOME": os.Getenv("HOME"), "DSGATE_CACHE": os.Getenv("DSGATE_CACHE")}))
	if err != nil {
		fmt.Println(err)
		return
	}
	prompt, _ := tk.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: "Hi"}}, true)
	ids := tk.Encode(prompt, false) // the template already starts with BOS
	fmt.Println(ids)
	d := tk.NewStreamDecoder(true)
	for _, id := range []int32{23166, 1031, 3, 1} {
		fmt.Printf("%q ", d.Push(id))
	}
	fmt.Printf("%q\n", d.Flush())
	// Output:
	// [0 128803 23166 128804]
	// "Hi" " there" "!" "" ""
}
