package adapt

import (
	"context"
	"errors"
	"fmt"

	"github.com/dsgate/dsgate/core/engine"
	"github.com/dsgate/dsgate/core/sample"
	"github.com/dsgate/dsgate/gateway/api"
)

// Engine presents a *engine.Engine as an api.Engine.
func Engine(e *engine.Engine) api.Engine { return eng{e} }

type eng struct{ e *engine.Engine }

// engineErr wraps err with the api sentinel matching its engine error.
func engineErr(err error) error {
	var ptl *engine.PromptTooLongError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ptl):
		return fmt.Errorf("%w: %w", api.ErrContextLength, err)
	case errors.Is(err, engine.ErrOverloaded), errors.Is(err, engine.ErrClosed):
		return fmt.Errorf("%w: %w", api.ErrOverloaded, err)
	case errors.Is(err, engine.ErrInvalidRequest):
		return fmt.Errorf("%w: %w", api.ErrInvalidRequest, err)
	}
	return err
}

func (a eng) Submit(ctx context.Context, req api.GenRequest) (<-chan api.GenEvent, error) {
	sp := req.Sampling
	in, err := a.e.Submit(ctx, engine.Request{
		Prompt: req.Prompt, Tenant: req.Tenant, MaxTokens: req.MaxTokens,
		Sampling: sample.Params{Temperature: float32(sp.Temperature), TopP: float32(sp.TopP), TopK: sp.TopK, MinP: float32(sp.MinP),
			RepetitionPenalty: float32(sp.RepetitionPenalty), PresencePenalty: float32(sp.PresencePenalty),
			FrequencyPenalty: float32(sp.FrequencyPenalty), Seed: sp.Seed},
		StopIDs: req.StopIDs, StopStrings: req.StopStrings, Logprobs: req.Logprobs, TopLogprobs: req.TopLogprobs,
		Policy: req.Policy,
	})
	if err != nil {
		return nil, engineErr(err)
	}
	out := make(chan api.GenEvent, 16)
	go func() {
		defer close(out)
		for ev := range in {
			out <- api.GenEvent{Text: ev.Text, Tokens: ev.Tokens, Logprobs: logprobs(ev.Logprobs), Finish: ev.Finish,
				Usage: api.Usage{PromptTokens: ev.Usage.PromptTokens, CachedPromptTokens: ev.Usage.CachedPromptTokens, CompletionTokens: ev.Usage.CompletionTokens},
				Err:   engineErr(ev.Err)}
		}
	}()
	return out, nil
}

func logprobs(in []sample.TokenLogprob) []api.TokenLogprob {
	if len(in) == 0 {
		return nil
	}
	out := make([]api.TokenLogprob, len(in))
	for i, lp := range in {
		out[i] = api.TokenLogprob{ID: lp.ID, Logprob: float64(lp.Logprob)}
		for _, t := range lp.Top {
			out[i].Top = append(out[i].Top, api.TopLogprob{ID: t.ID, Logprob: float64(t.Logprob)})
		}
	}
	return out
}

func (a eng) Stats() api.EngineStats {
	st := a.e.Stats()
	return api.EngineStats{QueueLen: st.QueueLen, Running: st.Running, KVBlocksUsed: st.KVBlocksUsed, KVBlocksFree: st.KVBlocksFree,
		PrefixHitTokens: st.PrefixHitTokens, PromptTokens: st.PromptTokens, GeneratedTokens: st.GeneratedTokens,
		Steps: st.Steps, StepSeconds: st.StepSeconds}
}
