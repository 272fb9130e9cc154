package sessions

// TokenCount is the number of tokens the turn occupies in a prompt: len(PromptIDs) +
// len(OutputIDs), or, for a turn stored without ids, the sum of its messages' Tokens.
func (t Turn) TokenCount() int {
	if n := len(t.PromptIDs) + len(t.OutputIDs); n > 0 {
		return n
	}
	n := 0
	for _, m := range t.Messages {
		n += max(m.Tokens, 0)
	}
	return n
}

// TrimTurns drops the oldest turns until the remaining ones fit in budget tokens and returns
// the kept turns (a suffix of turns, sharing its memory) and how many were dropped. Whole
// turns are dropped, never half of one. The system prompt is not a turn, so it is always
// kept: subtract its tokens (and the new turn's and the reply's) from the context length to
// get budget. cost measures a turn; nil means Turn.TokenCount. A budget below zero drops
// every turn. The gateway reports the dropped count to the client.
func TrimTurns(turns []Turn, budget int, cost func(Turn) int) (kept []Turn, dropped int) {
	if cost == nil {
		cost = Turn.TokenCount
	}
	if budget < 0 {
		return turns[len(turns):], len(turns)
	}
	// Walk from the newest turn back, keeping turns while they fit.
	used := 0
	first := len(turns)
	for i := len(turns) - 1; i >= 0; i-- {
		c := max(cost(turns[i]), 0)
		if used+c > budget {
			break
		}
		used += c
		first = i
	}
	return turns[first:], first
}
