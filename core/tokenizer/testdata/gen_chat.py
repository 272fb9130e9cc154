#!/usr/bin/env python3
"""Generate chat.jsonl.gz: conversations rendered by transformers' apply_chat_template. CI never runs it.

Install: the reference pins transformers 4.46.3 (inference/requirements.txt); transformers 5.x drops
message keys whose value is None before rendering, which breaks this template's tool-call branch
(`message['content'] is none`), so use the pinned version:
    python3 -m venv /tmp/hf446 && /tmp/hf446/bin/pip install "transformers==4.46.3" jinja2
Run from the repository root:
    /tmp/hf446/bin/python core/tokenizer/testdata/gen_chat.py [--tokenizer DIR]

Each line of chat.jsonl.gz: {"name", "messages", "add_generation_prompt", "text", "ids"} with
text = apply_chat_template(messages, tokenize=False, add_generation_prompt=...) and
ids = apply_chat_template(messages, tokenize=True, add_generation_prompt=...), using the real
tokenizer_config.json (its chat_template) and tokenizer.json.
It also writes bos.jsonl.gz, {"text", "ids"}: tokenizer.encode(text) with the default
add_special_tokens=True for every 200th corpus sample (run gen_golden.py first). Under the pinned
version the tokenizer is LlamaTokenizerFast, which prepends BOS (spec §2.2 step 5); transformers 5.x
loads a generic backend that does not.
"""
import argparse
import gzip
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def gz_writer(path):
    """A text writer for a gzip file with a zero mtime, so reruns give identical bytes."""
    import io
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=9, mtime=0), encoding="utf-8")


def default_dir():
    cache = os.environ.get("DSGATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dsgate")
    return os.path.join(cache, "tokenizer", "deepseek_v3")


CHATS = []


def chat(name, msgs):
    CHATS.append((name, msgs))


def tc(i, name, args):
    return {"id": "call_%d" % i, "type": "function", "function": {"name": name, "arguments": args}}


def build_chats():
    chat("single-user", [{"role": "user", "content": "Hi"}])
    chat("system-user", [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "What is 2+2?"}])
    chat("two-systems", [{"role": "system", "content": "You are terse."}, {"role": "system", "content": "Answer in French."},
                         {"role": "user", "content": "Hello"}])
    chat("three-systems-interleaved", [{"role": "system", "content": "S1"}, {"role": "user", "content": "u1"},
                                       {"role": "assistant", "content": "a1"}, {"role": "system", "content": "S2\nline"},
                                       {"role": "user", "content": "u2"}, {"role": "system", "content": "S3"}])
    chat("multi-turn", [{"role": "user", "content": "Tell me a joke."},
                        {"role": "assistant", "content": "Why did the chicken cross the road? To get to the other side."},
                        {"role": "user", "content": "Another one, please."}])
    chat("assistant-last", [{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}])
    chat("empty-contents", [{"role": "system", "content": ""}, {"role": "user", "content": ""},
                            {"role": "assistant", "content": ""}, {"role": "user", "content": " "}])
    chat("special-tokens-in-content", [{"role": "user", "content": "Say <｜end▁of▁sentence｜> and <|EOT|> and <|User|> literally."},
                                       {"role": "assistant", "content": "<｜User｜>hi<｜Assistant｜>"}])
    chat("tool-call-single", [{"role": "system", "content": "You can call tools."},
                              {"role": "user", "content": "Weather in Paris?"},
                              {"role": "assistant", "content": None, "tool_calls": [tc(1, "get_weather", '{"city": "Paris"}')]}])
    chat("tool-calls-multiple", [{"role": "user", "content": "Weather in Paris and Tokyo?"},
                                 {"role": "assistant", "content": None, "tool_calls": [
                                     tc(1, "get_weather", '{"city": "Paris"}'), tc(2, "get_weather", '{"city": "東京"}'),
                                     tc(3, "get_time", '{"tz": "Asia/Tokyo"}')]}])
    chat("tool-roundtrip", [{"role": "user", "content": "Weather in Paris?"},
                            {"role": "assistant", "content": None, "tool_calls": [tc(1, "get_weather", '{"city": "Paris"}')]},
                            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18, "sky": "cloudy"}'},
                            {"role": "assistant", "content": "It is 18 °C and cloudy in Paris."}])
    chat("tool-outputs-multiple", [{"role": "user", "content": "Paris and Tokyo?"},
                                   {"role": "assistant", "content": None, "tool_calls": [
                                       tc(1, "get_weather", '{"city": "Paris"}'), tc(2, "get_weather", '{"city": "Tokyo"}')]},
                                   {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                                   {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
                                   {"role": "assistant", "content": "Paris 18C, Tokyo 25C."}])
    chat("tool-two-rounds", [{"role": "system", "content": "Tools available."},
                             {"role": "user", "content": "Step 1"},
                             {"role": "assistant", "content": None, "tool_calls": [tc(1, "a", "{}")]},
                             {"role": "tool", "content": "r1"},
                             {"role": "assistant", "content": "done 1"},
                             {"role": "user", "content": "Step 2"},
                             {"role": "assistant", "content": None, "tool_calls": [tc(2, "b", '{"x": [1, 2]}'), tc(3, "c", "{}")]},
                             {"role": "tool", "content": "r2"},
                             {"role": "tool", "content": "r3"},
                             {"role": "assistant", "content": "done 2"}])
    chat("tool-output-then-user", [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": None, "tool_calls": [tc(1, "f", '{"k": "v"}')]},
                                   {"role": "tool", "content": "out"},
                                   {"role": "user", "content": "and now?"}])
    chat("tool-output-last", [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": None, "tool_calls": [tc(1, "f", "{}")]},
                              {"role": "tool", "content": "out\nwith lines"}])
    chat("chinese", [{"role": "system", "content": "你是一个乐于助人的助手。"},
                     {"role": "user", "content": "请用中文介绍一下你自己。"},
                     {"role": "assistant", "content": "我是 DeepSeek-V3，一个大型语言模型。"},
                     {"role": "user", "content": "谢谢！"}])
    chat("code", [{"role": "user", "content": "Write hello world in Go.\n\n```go\n"},
                  {"role": "assistant", "content": "```go\npackage main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello\")\n}\n```\n"},
                  {"role": "user", "content": "Now in Python:\r\n    print('hi')  \n"}])
    chat("emoji-unicode", [{"role": "user", "content": "👩‍💻👍🏽 café naïve Привет مرحبا 안녕하세요 \u3000\u200b"}])
    chat("system-only", [{"role": "system", "content": "Only a system prompt."}])
    chat("assistant-content-and-tool-calls", [{"role": "user", "content": "x"},
                                              {"role": "assistant", "content": "I will call a tool.",
                                               "tool_calls": [tc(1, "f", "{}")]}])
    chat("unknown-role", [{"role": "developer", "content": "dev note"}, {"role": "user", "content": "hi"}])
    chat("assistant-first", [{"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "hi"}])
    long = []
    for i in range(10):
        long.append({"role": "user", "content": "Question %d: what is %d squared?" % (i, i)})
        long.append({"role": "assistant", "content": "%d squared is %d." % (i, i * i)})
    chat("long-multi-turn", long)
    chat("tool-args-multiline", [{"role": "user", "content": "run"},
                                 {"role": "assistant", "content": None, "tool_calls": [
                                     tc(1, "exec", '{\n  "cmd": "ls -la",\n  "cwd": "/tmp"\n}')]},
                                 {"role": "tool", "content": "total 0\n"}, {"role": "tool", "content": ""},
                                 {"role": "user", "content": "thanks"}])



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=default_dir())
    args = ap.parse_args()
    import transformers
    from transformers import AutoTokenizer
    hft = AutoTokenizer.from_pretrained(args.tokenizer)
    cfg = json.load(open(os.path.join(args.tokenizer, "tokenizer_config.json"), encoding="utf-8"))
    assert hft.chat_template == cfg["chat_template"]
    build_chats()
    n = 0
    with gz_writer(os.path.join(HERE, "chat.jsonl.gz")) as f:
        for name, msgs in CHATS:
            for agp in (False, True):
                text = hft.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp)
                ids = hft.apply_chat_template(msgs, tokenize=True, add_generation_prompt=agp)
                if hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                f.write(json.dumps({"name": name, "messages": msgs, "add_generation_prompt": agp,
                                    "text": text, "ids": list(ids)}, ensure_ascii=False) + "\n")
                n += 1
    rows = [json.loads(l) for l in gzip.open(os.path.join(HERE, "corpus.jsonl.gz"), "rt", encoding="utf-8")]
    with gz_writer(os.path.join(HERE, "bos.jsonl.gz")) as f:
        for r in rows[::200]:
            ids = hft.encode(r["text"])
            assert ids[0] == hft.bos_token_id, r["name"]
            if ids[1:] != r["ids"]:
                # The pinned tokenizers (0.20.x) has older Unicode tables than the corpus' (see RATIONALE.md).
                print("bos: skipping %s sample: older Unicode tables give other ids" % r["name"], file=sys.stderr)
                continue
            f.write(json.dumps({"text": r["text"], "ids": ids}, ensure_ascii=False) + "\n")
    print("chat: %d renderings with transformers %s" % (n, transformers.__version__), file=sys.stderr)


if __name__ == "__main__":
    main()
