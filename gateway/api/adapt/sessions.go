package adapt

import (
	"context"
	"errors"
	"fmt"

	"github.com/dsgate/dsgate/gateway/api"
	"github.com/dsgate/dsgate/sessions"
)

// Sessions presents a sessions.Store as an api.SessionStore.
func Sessions(st sessions.Store) api.SessionStore { return sessionStore{st} }

type sessionStore struct{ st sessions.Store }

// sessionErr wraps err with the api sentinel matching its sessions sentinel.
func sessionErr(err error) error {
	if err == nil {
		return nil
	}
	for _, m := range []struct{ from, to error }{
		{sessions.ErrNotFound, api.ErrSessionNotFound},
		{sessions.ErrBusy, api.ErrSessionBusy},
		{sessions.ErrConflict, api.ErrSessionConflict},
		{sessions.ErrUnavailable, api.ErrSessionStoreUnavailable},
	} {
		if errors.Is(err, m.from) {
			return fmt.Errorf("%w: %w", m.to, err)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", api.ErrSessionStoreUnavailable, err)
	}
	return err
}

func toSession(s *sessions.Session) *api.Session {
	if s == nil {
		return nil
	}
	out := &api.Session{ID: s.ID, Owner: s.Owner, Created: s.Created, Updated: s.Updated, System: s.System,
		Metadata: s.Metadata, NumTurns: len(s.Turns)}
	if len(s.Turns) > 0 {
		out.Turns = make([]api.Turn, len(s.Turns))
		for i, t := range s.Turns {
			msgs := make([]api.SessionMessage, len(t.Messages))
			for j, m := range t.Messages {
				msgs[j] = api.SessionMessage{Role: m.Role, Content: m.Content, Time: m.Time, Tokens: m.Tokens}
			}
			out.Turns[i] = api.Turn{Messages: msgs, PromptIDs: t.PromptIDs, OutputIDs: t.OutputIDs}
		}
	}
	return out
}

func (a sessionStore) Create(ctx context.Context, owner, system string, md map[string]string) (*api.Session, error) {
	s, err := a.st.Create(ctx, owner, system, md)
	return toSession(s), sessionErr(err)
}

func (a sessionStore) Get(ctx context.Context, owner, id string) (*api.Session, error) {
	s, err := a.st.Get(ctx, owner, id)
	return toSession(s), sessionErr(err)
}

func (a sessionStore) List(ctx context.Context, owner string, limit, offset int) ([]*api.Session, int, error) {
	list, total, err := a.st.List(ctx, owner, limit, offset)
	if err != nil {
		return nil, 0, sessionErr(err)
	}
	out := make([]*api.Session, len(list))
	for i, s := range list {
		out[i] = toSession(s)
		out[i].NumTurns = -1 // List omits turns
	}
	return out, total, nil
}

func (a sessionStore) Delete(ctx context.Context, owner, id string) error {
	return sessionErr(a.st.Delete(ctx, owner, id))
}

func (a sessionStore) SetMetadata(ctx context.Context, owner, id string, md map[string]string) error {
	return sessionErr(a.st.SetMetadata(ctx, owner, id, md))
}

func (a sessionStore) Acquire(ctx context.Context, owner, id string) (func(), error) {
	rel, err := a.st.Acquire(ctx, owner, id)
	return rel, sessionErr(err)
}

func (a sessionStore) AppendTurn(ctx context.Context, owner, id string, expected int, t api.Turn) error {
	msgs := make([]sessions.Message, len(t.Messages))
	for i, m := range t.Messages {
		msgs[i] = sessions.Message{Role: m.Role, Content: m.Content, Time: m.Time, Tokens: m.Tokens}
	}
	return sessionErr(a.st.AppendTurn(ctx, owner, id, expected, sessions.Turn{Messages: msgs, PromptIDs: t.PromptIDs, OutputIDs: t.OutputIDs}))
}

func (a sessionStore) Ping(ctx context.Context) error { return sessionErr(a.st.Ping(ctx)) }
