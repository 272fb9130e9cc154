package adapt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dsgate/dsgate/core/sample"
	"github.com/dsgate/dsgate/extensions"
	"github.com/dsgate/dsgate/gateway/api"
)

// Extensions presents an *extensions.Host as api.Extensions.
func Extensions(h *extensions.Host) api.Extensions { return ext{h} }

type ext struct{ h *extensions.Host }

// extErr wraps err with the api sentinel matching its extensions sentinel.
func extErr(err error) error {
	if err == nil {
		return nil
	}
	for _, m := range []struct{ from, to error }{
		{extensions.ErrNotFound, api.ErrExtensionNotFound},
		{extensions.ErrExists, api.ErrExtensionExists},
		{extensions.ErrInvalidModule, api.ErrInvalidModule},
		{extensions.ErrTooLarge, api.ErrModuleTooLarge},
		{extensions.ErrFailed, api.ErrExtensionFailed},
		{extensions.ErrClosed, api.ErrOverloaded},
	} {
		if errors.Is(err, m.from) {
			return fmt.Errorf("%w: %w", m.to, err)
		}
	}
	return err
}

func info(i extensions.Info) api.ExtensionInfo {
	return api.ExtensionInfo{Name: i.Name, Kind: i.Kind, SHA256: i.SHA256, Size: i.Size, ABIVersion: i.ABIVersion, Created: i.Created}
}

func (a ext) Add(ctx context.Context, name, kind string, module []byte) (api.ExtensionInfo, error) {
	i, err := a.h.Add(ctx, name, kind, module)
	return info(i), extErr(err)
}

func (a ext) List() []api.ExtensionInfo {
	l := a.h.List()
	out := make([]api.ExtensionInfo, len(l))
	for i, x := range l {
		out[i] = info(x)
	}
	return out
}

func (a ext) Get(name string) (api.ExtensionInfo, bool) {
	i, ok := a.h.Get(name)
	return info(i), ok
}

func (a ext) Delete(name string) error { return extErr(a.h.Delete(name)) }

func (a ext) MaxModuleBytes() int64 { return a.h.MaxModuleBytes() }

func (a ext) RenderTemplate(ctx context.Context, name string, in api.TemplateInput) (string, error) {
	msgs := make([]extensions.Message, len(in.Messages))
	for i, m := range in.Messages {
		em := extensions.Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name}
		for _, c := range m.ToolCalls {
			em.ToolCalls = append(em.ToolCalls, extensions.ToolCall{ID: c.ID, Type: c.Type,
				Function: extensions.FunctionCall{Name: c.Function.Name, Arguments: c.Function.Arguments}})
		}
		msgs[i] = em
	}
	out, err := a.h.RenderTemplate(ctx, name, extensions.TemplateInput{Messages: msgs, BOSToken: in.BOSToken, EOSToken: in.EOSToken,
		AddGenerationPrompt: in.AddGenerationPrompt})
	return out, extErr(err)
}

func (a ext) NewSampler(ctx context.Context, name string, args json.RawMessage, seed uint64) (sample.Policy, error) {
	p, err := a.h.NewSampler(ctx, name, args, seed)
	if err != nil {
		return nil, extErr(err)
	}
	return policy{p}, nil
}

// policy maps a sampler's errors to api.ErrExtensionFailed, so that a request whose
// module failed mid-generation answers 422 extension_failed.
type policy struct{ p sample.Policy }

func (p policy) Next(ctx context.Context, step int, recent []int32, cands []sample.Candidate) (int32, bool, error) {
	id, stop, err := p.p.Next(ctx, step, recent, cands)
	if err != nil && !errors.Is(err, api.ErrExtensionFailed) {
		if errors.Is(err, extensions.ErrFailed) {
			err = extErr(err)
		} else {
			err = fmt.Errorf("%w: %w", api.ErrExtensionFailed, err)
		}
	}
	return id, stop, err
}

func (p policy) Close() error { return p.p.Close() }
