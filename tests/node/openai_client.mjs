// Drives a running dsgate gateway with the official openai npm client (a client nobody
// on the team wrote) and checks what the SDK sees. Environment:
//   DSGATE_URL    base URL of the gateway, e.g. http://127.0.0.1:8080 (required)
//   DSGATE_KEY    API key (default "dev" for open dev mode)
//   DSGATE_MODEL  model id the server lists (default deepseek_v3)
// Exits 0 and prints one JSON summary line when every check passes; exits 1 with the
// failing check otherwise. Run by gateway's Go tests (node tests/node/openai_client.mjs).
import OpenAI from "openai";
import assert from "node:assert/strict";

const base = process.env.DSGATE_URL;
if (!base) {
  console.error("DSGATE_URL is required");
  process.exit(2);
}
const model = process.env.DSGATE_MODEL || "deepseek_v3";
const client = new OpenAI({ baseURL: base.replace(/\/$/, "") + "/v1", apiKey: process.env.DSGATE_KEY || "dev", maxRetries: 0, timeout: 120_000 });
const summary = {};

async function check(name, fn) {
  try {
    summary[name] = (await fn()) ?? "ok";
  } catch (err) {
    console.error(`FAIL ${name}:`, err);
    process.exit(1);
  }
}

const messages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Say hello in three languages." },
];
const params = { model, messages, max_tokens: 12, temperature: 0.8, top_p: 0.95, seed: 1234 };
let nonStreamText = "";

await check("models.list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), `models ${JSON.stringify(ids)} lack ${model}`);
  return ids;
});

await check("chat.non_streaming", async () => {
  const r = await client.chat.completions.create(params);
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, model);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, "assistant");
  assert.equal(typeof c.message.content, "string");
  assert.ok(["stop", "length"].includes(c.finish_reason), c.finish_reason);
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  nonStreamText = c.message.content;
  return { finish_reason: c.finish_reason, completion_tokens: r.usage.completion_tokens, chars: nonStreamText.length };
});

await check("chat.streaming_matches", async () => {
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = "";
  let first = true;
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    const d = chunk.choices[0].delta;
    if (first) {
      assert.equal(d.role, "assistant", "role in the first delta");
      first = false;
    }
    if (d.content) text += d.content;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(text, nonStreamText, "streamed deltas must concatenate to the non-streaming answer under the same seed");
  assert.ok(finish === "stop" || finish === "length", `finish_reason ${finish}`);
  assert.ok(usage && usage.completion_tokens > 0, "usage chunk with include_usage");
  return { chunks, finish };
});

await check("completions", async () => {
  const r = await client.completions.create({ model, prompt: "The capital of France is", max_tokens: 6, seed: 7, temperature: 0.5 });
  assert.equal(r.object, "text_completion");
  assert.equal(typeof r.choices[0].text, "string");
  assert.ok(r.usage.completion_tokens > 0);
  const s = await client.completions.create({ model, prompt: "The capital of France is", max_tokens: 6, seed: 7, temperature: 0.5, stream: true });
  let text = "";
  for await (const c of s) text += c.choices[0]?.text ?? "";
  assert.equal(text, r.choices[0].text, "streamed completion matches");
  return { finish_reason: r.choices[0].finish_reason };
});

await check("error.api_error", async () => {
  try {
    await client.chat.completions.create({ ...params, n: 2 });
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.status, 400);
    assert.equal(err.code, "invalid_request");
    assert.equal(err.param, "n");
    assert.ok(err.headers["x-request-id"], "x-request-id header");
    return { status: err.status, code: err.code };
  }
  throw new Error("n=2 was accepted");
});

await check("error.context_length", async () => {
  try {
    await client.chat.completions.create({ ...params, max_tokens: 10_000_000 });
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError);
    assert.equal(err.status, 400);
    assert.equal(err.code, "context_length_exceeded");
    return { status: err.status, code: err.code };
  }
  throw new Error("max_tokens beyond the context was accepted");
});

if (process.env.DSGATE_KEY && process.env.DSGATE_KEY !== "dev") {
  await check("error.auth", async () => {
    const bad = new OpenAI({ baseURL: client.baseURL, apiKey: "sk-wrong", maxRetries: 0 });
    try {
      await bad.models.list();
    } catch (err) {
      assert.ok(err instanceof OpenAI.AuthenticationError, `${err}`);
      assert.equal(err.status, 401);
      assert.equal(err.code, "invalid_api_key");
      return { status: err.status, code: err.code };
    }
    throw new Error("a wrong key was accepted");
  });
}

console.log(JSON.stringify(summary));
