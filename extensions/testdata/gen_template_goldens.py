#!/usr/bin/env python3
"""Renders DeepSeek-V3's chat template (tokenizer_config.json, as fetched by
scripts/fetch-tokenizer.sh) with Jinja2 configured the way Hugging Face transformers'
apply_chat_template configures it, and writes dsv3_template_goldens.json for
template_test.go. Usage: python3 gen_template_goldens.py [TOKENIZER_DIR] > dsv3_template_goldens.json
"""
import json, os, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols

tok_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("DSGATE_CACHE", os.path.expanduser("~/.cache/dsgate")), "tokenizer", "deepseek_v3")
cfg = json.load(open(os.path.join(tok_dir, "tokenizer_config.json"), encoding="utf-8"))

def tok(v):
    return v["content"] if isinstance(v, dict) else v

def raise_exception(msg):
    raise ValueError(msg)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.globals["raise_exception"] = raise_exception
template = env.from_string(cfg["chat_template"])

def call(name, args):
    return {"type": "function", "function": {"name": name, "arguments": args}}

cases = [
    ("one user", [{"role": "user", "content": "Hi"}], True),
    ("no generation prompt", [{"role": "user", "content": "Hi"}], False),
    ("empty", [], True),
    ("system and turns", [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"}], True),
    ("two systems anywhere", [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "S1"},
        {"role": "assistant", "content": "b"},
        {"role": "system", "content": "S2\nline"}], True),
    ("unicode and specials in content", [
        {"role": "user", "content": "héllo 世界 🙂 <｜User｜> {{ not jinja }} {% raw %}"},
        {"role": "assistant", "content": ""}], True),
    ("multi-line", [{"role": "user", "content": "line1\n\n  line2\t\r\n"}], True),
    ("tool calls and outputs", [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            call("get_weather", "{\"city\": \"Paris\"}"), call("get_weather", "{\"city\": \"Rome\"}")]},
        {"role": "tool", "content": "18C"},
        {"role": "tool", "content": "22C"},
        {"role": "assistant", "content": "Paris 18C, Rome 22C."},
        {"role": "user", "content": "Thanks"}], True),
    ("ends on tool output", [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call("f", "{}")]},
        {"role": "tool", "content": "out"}], True),
    ("second tool-call turn", [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": None, "tool_calls": [call("f", "{\"a\":1}")]},
        {"role": "tool", "content": "r1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": None, "tool_calls": [call("g", "{}")]},
        {"role": "tool", "content": "r2"}], False),
    ("assistant prefill", [
        {"role": "user", "content": "Write a haiku"},
        {"role": "assistant", "content": "Autumn"}], False),
]

out = []
for name, msgs, agp in cases:
    text = template.render(messages=msgs, add_generation_prompt=agp,
                           bos_token=tok(cfg["bos_token"]), eos_token=tok(cfg["eos_token"]))
    out.append({"name": name, "messages": msgs, "add_generation_prompt": agp,
                "bos_token": tok(cfg["bos_token"]), "eos_token": tok(cfg["eos_token"]), "want": text})
json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
sys.stdout.write("\n")
