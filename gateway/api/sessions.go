package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// Response headers of requests that name a session.
const (
	// HeaderSessionID echoes the session the turn belongs to.
	HeaderSessionID = "X-Session-Id"
	// HeaderTrimmedTurns is the number of oldest turns left out of the prompt because the
	// history no longer fit the context (0 when nothing was trimmed). The same number is
	// in the response's "session.trimmed_turns" field.
	HeaderTrimmedTurns = "X-Session-Trimmed-Turns"
)

// Limits on session metadata.
const (
	maxMetadataEntries = 32
	maxMetadataKey     = 64
	maxMetadataValue   = 512
	maxSystemPrompt    = 64 << 10
	defaultSessionPage = 20
	maxSessionPage     = 100
)

// sessionTurn is a turn in progress on a session (held busy while it runs).
type sessionTurn struct {
	owner, id string
	sess      *Session
	newMsgs   []Message
	newIDs    []int32
	trimmed   int
}

func (t *sessionTurn) info() *sessionInfo {
	if t == nil {
		return nil
	}
	return &sessionInfo{ID: t.id, Turns: len(t.sess.Turns) + 1, TrimmedTurns: t.trimmed}
}

func (s *Server) store() (SessionStore, error) {
	if s.cfg.Sessions == nil {
		return nil, fmt.Errorf("%w: no session store configured", ErrSessionStoreUnavailable)
	}
	return s.cfg.Sessions, nil
}

// openTurn marks the session busy and loads its history.
func (s *Server) openTurn(ctx context.Context, owner, id string, msgs []Message) (*sessionTurn, func(), error) {
	st, err := s.store()
	if err != nil {
		return nil, nil, err
	}
	for i, m := range msgs {
		if m.Role == "system" {
			return nil, nil, invalid(fmt.Sprintf("messages[%d].role", i), "a session's system prompt is set when it is created (POST /v1/sessions); send only the new turn")
		}
	}
	release, err := st.Acquire(ctx, owner, id)
	if err != nil {
		return nil, nil, fmt.Errorf("session %s: %w", id, err)
	}
	sess, err := st.Get(ctx, owner, id)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("session %s: %w", id, err)
	}
	return &sessionTurn{owner: owner, id: id, sess: sess, newMsgs: msgs}, release, nil
}

// sessionPrompt builds the prompt: the stored ids of every kept turn, then the new
// turn's ids. The new turn's text is the difference between the template rendering of
// the whole conversation and that of the history, so the stored (sampled) ids are reused
// exactly as the engine saw them. When history plus the completion budget exceed the
// context, the oldest turns are dropped (the system prompt is kept) and counted in
// sessionTurn.trimmed.
func (s *Server) sessionPrompt(ctx context.Context, spec *genSpec, template string) ([]int32, error) {
	t := spec.session
	sess := t.sess
	tk := s.cfg.Tokenizer
	var head []Message
	if sess.System != "" {
		head = append(head, Message{Role: "system", Content: sess.System})
	}
	hist := append([]Message(nil), head...)
	for _, turn := range sess.Turns {
		for _, m := range turn.Messages {
			hist = append(hist, Message{Role: m.Role, Content: m.Content})
		}
	}
	full, err := s.render(ctx, template, append(append([]Message(nil), hist...), t.newMsgs...), true)
	if err != nil {
		return nil, err
	}
	if len(sess.Turns) == 0 {
		t.newIDs = tk.Encode(full, false)
		return t.newIDs, nil
	}
	prefix, err := s.render(ctx, template, hist, false)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(full, prefix) {
		return nil, fmt.Errorf("%w: the chat template does not render the history as a prefix of the next prompt, so it cannot be used with sessions", ErrInvalidRequest)
	}
	eos := tk.EOS()
	t.newIDs = tk.Encode(full[len(prefix):], false)
	if last := sess.Turns[len(sess.Turns)-1].OutputIDs; len(last) == 0 || last[len(last)-1] != eos {
		// the reply stopped without EOS (length, stop string); the template closes it with one
		t.newIDs = append([]int32{eos}, t.newIDs...)
	}
	turnIDs := func(i int, first bool) []int32 {
		ids := sess.Turns[i].PromptIDs
		if first && len(ids) > 0 && ids[0] == eos {
			ids = ids[1:]
		}
		return ids
	}
	size := func(k int, headLen int) int {
		n := headLen
		for i := k; i < len(sess.Turns); i++ {
			n += len(turnIDs(i, k > 0 && i == k)) + len(sess.Turns[i].OutputIDs)
		}
		newIDs := t.newIDs
		if k > 0 && k == len(sess.Turns) && len(newIDs) > 0 && newIDs[0] == eos {
			newIDs = newIDs[1:]
		}
		return n + len(newIDs)
	}
	reserve := spec.req.MaxTokens
	if reserve == 0 {
		reserve = min(512, s.cfg.MaxSeqLen/4)
	}
	k, headIDs := 0, []int32(nil)
	if size(0, 0)+reserve > s.cfg.MaxSeqLen {
		headText, err := s.render(ctx, template, head, false)
		if err == nil && headText != "" {
			headIDs = tk.Encode(headText, false)
		} else {
			headIDs = []int32{tk.BOS()}
		}
		for k < len(sess.Turns) && size(k, len(headIDs))+reserve > s.cfg.MaxSeqLen {
			k++
		}
	}
	t.trimmed = k
	prompt := make([]int32, 0, size(k, len(headIDs)))
	prompt = append(prompt, headIDs...)
	for i := k; i < len(sess.Turns); i++ {
		prompt = append(prompt, turnIDs(i, k > 0 && i == k)...)
		prompt = append(prompt, sess.Turns[i].OutputIDs...)
	}
	newIDs := t.newIDs
	if k > 0 && k == len(sess.Turns) && len(newIDs) > 0 && newIDs[0] == eos {
		newIDs = newIDs[1:]
	}
	return append(prompt, newIDs...), nil
}

// commitTurn appends the finished turn atomically (expected turn count checked by the
// store). It runs even if the client went away after the reply completed.
func (s *Server) commitTurn(ctx context.Context, t *sessionTurn, res *result) error {
	st, err := s.store()
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	turn := Turn{PromptIDs: t.newIDs, OutputIDs: res.tokens}
	for i, m := range t.newMsgs {
		sm := SessionMessage{Role: m.Role, Content: m.Content, Time: now}
		if i == len(t.newMsgs)-1 {
			sm.Tokens = len(t.newIDs)
		}
		turn.Messages = append(turn.Messages, sm)
	}
	turn.Messages = append(turn.Messages, SessionMessage{Role: "assistant", Content: res.text, Time: now, Tokens: len(res.tokens)})
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := st.AppendTurn(cctx, t.owner, t.id, len(t.sess.Turns), turn); err != nil {
		return fmt.Errorf("session %s: storing the turn: %w", t.id, err)
	}
	return nil
}

type sessionJSON struct {
	ID       string            `json:"id"`
	Object   string            `json:"object"`
	Created  int64             `json:"created"`
	Updated  int64             `json:"updated"`
	System   string            `json:"system"`
	Metadata map[string]string `json:"metadata"`
	Turns    *int              `json:"turns,omitempty"` // omitted in lists (the store does not count them there)
	Messages []SessionMessage  `json:"messages,omitempty"`
}

func toSessionJSON(x *Session, withMessages bool) sessionJSON {
	var turns *int
	if n := max(x.NumTurns, len(x.Turns)); n >= 0 {
		turns = &n
	}
	md := x.Metadata
	if md == nil {
		md = map[string]string{}
	}
	out := sessionJSON{ID: x.ID, Object: "session", Created: x.Created.Unix(), Updated: x.Updated.Unix(), System: x.System, Metadata: md, Turns: turns}
	if withMessages {
		out.Messages = []SessionMessage{}
		for _, t := range x.Turns {
			out.Messages = append(out.Messages, t.Messages...)
		}
	}
	return out
}

func checkMetadata(md map[string]string) error {
	if len(md) > maxMetadataEntries {
		return invalid("metadata", "at most %d metadata entries", maxMetadataEntries)
	}
	for k, v := range md {
		if k == "" || len(k) > maxMetadataKey {
			return invalid("metadata", "metadata keys must have 1 to %d bytes", maxMetadataKey)
		}
		if len(v) > maxMetadataValue {
			return invalid("metadata", "metadata value of %q is longer than %d bytes", k, maxMetadataValue)
		}
	}
	return nil
}

type createSessionRequest struct {
	System   string            `json:"system"`
	Metadata map[string]string `json:"metadata"`
}

// createSession is POST /v1/sessions.
func (s *Server) createSession(c echo.Context) error {
	st, err := s.store()
	if err != nil {
		return err
	}
	var req createSessionRequest
	if err := decodeJSON(c, &req); err != nil && !errors.Is(err, errEmptyBody) {
		return err
	}
	if len(req.System) > maxSystemPrompt {
		return invalid("system", "system prompt longer than %d bytes", maxSystemPrompt)
	}
	if err := checkMetadata(req.Metadata); err != nil {
		return err
	}
	sess, err := st.Create(c.Request().Context(), tenantOf(c), req.System, req.Metadata)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return c.JSON(http.StatusCreated, toSessionJSON(sess, true))
}

func queryInt(c echo.Context, name string, def, lo, hi int) (int, error) {
	v := c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, invalid(name, "%s must be an integer in [%d, %d]", name, lo, hi)
	}
	return n, nil
}

// listSessions is GET /v1/sessions?limit=&offset= (most recently used first).
func (s *Server) listSessions(c echo.Context) error {
	st, err := s.store()
	if err != nil {
		return err
	}
	limit, err := queryInt(c, "limit", defaultSessionPage, 1, maxSessionPage)
	if err != nil {
		return err
	}
	offset, err := queryInt(c, "offset", 0, 0, 1<<30)
	if err != nil {
		return err
	}
	list, total, err := st.List(c.Request().Context(), tenantOf(c), limit, offset)
	if err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	data := make([]sessionJSON, 0, len(list))
	for _, x := range list {
		data = append(data, toSessionJSON(x, false))
	}
	return c.JSON(http.StatusOK, map[string]any{"object": "list", "data": data, "total": total,
		"limit": limit, "offset": offset, "has_more": offset+len(list) < total})
}

// getSession is GET /v1/sessions/:id (with messages).
func (s *Server) getSession(c echo.Context) error {
	st, err := s.store()
	if err != nil {
		return err
	}
	sess, err := st.Get(c.Request().Context(), tenantOf(c), c.Param("id"))
	if err != nil {
		return fmt.Errorf("get session: %w", err)
	}
	return c.JSON(http.StatusOK, toSessionJSON(sess, true))
}

type patchSessionRequest struct {
	Title    *string            `json:"title"`
	Metadata map[string]*string `json:"metadata"`
}

// patchSession is PATCH /v1/sessions/:id: merge metadata (a null or "" value deletes a
// key); "title" is shorthand for metadata.title (the web page's rename).
func (s *Server) patchSession(c echo.Context) error {
	st, err := s.store()
	if err != nil {
		return err
	}
	var req patchSessionRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ctx, owner, id := c.Request().Context(), tenantOf(c), c.Param("id")
	sess, err := st.Get(ctx, owner, id)
	if err != nil {
		return fmt.Errorf("patch session: %w", err)
	}
	md := map[string]string{}
	for k, v := range sess.Metadata {
		md[k] = v
	}
	if req.Title != nil {
		req.Metadata = mergeTitle(req.Metadata, req.Title)
	}
	for k, v := range req.Metadata {
		if v == nil || *v == "" {
			delete(md, k)
		} else {
			md[k] = *v
		}
	}
	if err := checkMetadata(md); err != nil {
		return err
	}
	if err := st.SetMetadata(ctx, owner, id, md); err != nil {
		return fmt.Errorf("patch session: %w", err)
	}
	sess, err = st.Get(ctx, owner, id)
	if err != nil {
		return fmt.Errorf("patch session: %w", err)
	}
	return c.JSON(http.StatusOK, toSessionJSON(sess, false))
}

func mergeTitle(md map[string]*string, title *string) map[string]*string {
	if md == nil {
		md = map[string]*string{}
	}
	md["title"] = title
	return md
}

// deleteSession is DELETE /v1/sessions/:id.
func (s *Server) deleteSession(c echo.Context) error {
	st, err := s.store()
	if err != nil {
		return err
	}
	id := c.Param("id")
	if err := st.Delete(c.Request().Context(), tenantOf(c), id); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return c.JSON(http.StatusOK, map[string]any{"id": id, "object": "session.deleted", "deleted": true})
}
