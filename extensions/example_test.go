package extensions_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/dsgate/dsgate/core/sample"
	"github.com/dsgate/dsgate/extensions"
)

// A sampler module chooses each token; this one is the hand-written examples/wat/greedy.wat.
func ExampleHost_NewSampler() {
	ctx := context.Background()
	h, err := extensions.Open(ctx, extensions.Options{CacheDir: extensions.SharedCacheDir()})
	if err != nil {
		panic(err)
	}
	defer h.Close(ctx)
	info, err := h.Add(ctx, "greedy", extensions.KindSampler, extensions.FixtureModule("greedy"))
	if err != nil {
		panic(err)
	}
	fmt.Println(info.Name, info.Kind, info.ABIVersion)

	p, err := h.NewSampler(ctx, "greedy", json.RawMessage(`{}`), 42)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	cands := []sample.Candidate{{ID: 3303, Logit: 9.5}, {ID: 17, Logit: 7}, {ID: 1, Logit: 2}}
	id, stop, err := p.Next(ctx, 0, nil, cands)
	fmt.Println(id, stop, err)
	id, stop, err = p.Next(ctx, 1, []int32{3303}, []sample.Candidate{{ID: 1, Logit: 12}, {ID: 5, Logit: 1}})
	fmt.Println(id, stop, err)
	// Output:
	// greedy sampler 1
	// 3303 false <nil>
	// 0 true <nil>
}

// A template module renders the prompt; this one is the DeepSeek-V3 example built with the Go SDK.
func ExampleHost_RenderTemplate() {
	ctx := context.Background()
	h, err := extensions.Open(ctx, extensions.Options{CacheDir: extensions.SharedCacheDir()})
	if err != nil {
		panic(err)
	}
	defer h.Close(ctx)
	if _, err := h.Add(ctx, "dsv3", extensions.KindTemplate, extensions.FixtureModule("dsv3template")); err != nil {
		panic(err)
	}
	out, err := h.RenderTemplate(ctx, "dsv3", extensions.TemplateInput{
		Messages:            []extensions.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}},
		BOSToken:            "<｜begin▁of▁sentence｜>",
		AddGenerationPrompt: true,
	})
	fmt.Println(out, err)
	// Output: <｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜> <nil>
}
