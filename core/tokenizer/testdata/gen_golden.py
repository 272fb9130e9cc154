#!/usr/bin/env python3
"""Generate the golden files the Go tokenizer tests compare against. CI never runs this.

Install (no torch needed):
    python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install tokenizers transformers jinja2
Run from the repository root (tokenizer files from scripts/fetch-tokenizer.sh):
    /tmp/hfenv/bin/python core/tokenizer/testdata/gen_golden.py [--tokenizer DIR]

Writes, next to this script:
  corpus.jsonl.gz  one sample a line: {"name", "text", "ids"}; ids from HF `tokenizers`
                   (Tokenizer.from_file(tokenizer.json).encode(text, add_special_tokens=False)),
                   cross-checked against transformers' AutoTokenizer.
  decode.jsonl.gz  {"ids", "skip_special", "text"}: HF tokenizers decode.
(chat.jsonl.gz and bos.jsonl.gz come from gen_chat.py, which needs the transformers version the reference pins.)
The corpus is built from text already on this machine (Go's source tree, golang.org/x/text test
data in the module cache, Python's stdlib, /usr/share/doc, JS files in the module cache) plus
generated edge cases; a fixed seed keeps the generated part stable.
"""
import argparse
import glob
import gzip
import json
import os
import random
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def gz_writer(path):
    """A text writer for a gzip file with a zero mtime, so reruns give identical bytes."""
    import io
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=9, mtime=0), encoding="utf-8")


def default_dir():
    cache = os.environ.get("DSGATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dsgate")
    return os.path.join(cache, "tokenizer", "deepseek_v3")


def read(path, limit=None):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                b = f.read()
        else:
            with open(path, "rb") as f:
                b = f.read()
    except OSError:
        return ""
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return s[:limit] if limit else s


def chunks(rng, text, name, budget, lo=200, hi=6000):
    """Cut random slices of text (at character boundaries) until budget characters are taken."""
    out = []
    taken = 0
    while taken < budget and len(text) > lo:
        n = rng.randint(lo, hi)
        start = rng.randint(0, max(0, len(text) - n))
        s = text[start:start + n]
        out.append((name, s))
        taken += len(s)
    return out


def files_budget(rng, paths, name, budget, per_file=8000):
    rng.shuffle(paths)
    out = []
    taken = 0
    for p in paths:
        if taken >= budget:
            break
        s = read(p)
        if not s.strip():
            continue
        for item in chunks(rng, s, "%s:%s" % (name, os.path.basename(p)), min(per_file, budget - taken)):
            out.append(item)
            taken += len(item[1])
    return out


def go_literals(path):
    """Non-ASCII string literals of a Go file (for multilingual text: x/text tables)."""
    src = read(path)
    out = []
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', src):
        lit = m.group(1)
        if "\\x" in lit or not re.search(r"[^\x00-\x7f]", lit):
            continue
        try:
            out.append(json.loads('"' + lit + '"'))
        except ValueError:
            continue
    return out


def mod_cache():
    try:
        return subprocess.check_output(["go", "env", "GOMODCACHE"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.expanduser("~/go/pkg/mod")


def real_text(rng):
    out = []
    goroot = subprocess.check_output(["go", "env", "GOROOT"], text=True).strip()
    gofiles = sorted(glob.glob(os.path.join(goroot, "src", "*", "*.go")) + glob.glob(os.path.join(goroot, "src", "*", "*", "*.go")))
    out += files_budget(rng, gofiles, "go", 260_000)
    pyfiles = sorted(glob.glob("/usr/lib/python3*/*.py") + glob.glob("/usr/local/lib/python3*/*.py"))
    out += files_budget(rng, pyfiles, "py", 150_000)
    mc = mod_cache()
    jsfiles = sorted(glob.glob(os.path.join(mc, "**", "*.js"), recursive=True))
    jsfiles = [p for p in jsfiles if os.path.getsize(p) < 400_000]
    out += files_budget(rng, jsfiles, "js", 90_000)
    docs = sorted(glob.glob("/usr/share/doc/*/copyright") + glob.glob("/usr/share/doc/*/README*") +
                  glob.glob("/usr/share/doc/*/changelog*.gz") + glob.glob(os.path.join(goroot, "doc", "*.md")))
    out += files_budget(rng, docs, "doc", 150_000, per_file=5000)
    xt = sorted(glob.glob(os.path.join(mc, "golang.org", "x", "text@*")))
    if not xt:
        sys.exit("golang.org/x/text is not in the module cache (go mod download in the repo)")
    td = os.path.join(xt[-1], "encoding", "testdata")
    for f, budget in [("candide-utf-8.txt", 60_000), ("sunzi-bingfa-simplified-utf-8.txt", 45_000),
                      ("sunzi-bingfa-traditional-utf-8.txt", 25_000), ("rashomon-utf-8.txt", 45_000),
                      ("unsu-joh-eun-nal-utf-8.txt", 45_000)]:
        s = read(os.path.join(td, f))
        if not s:
            sys.exit("missing " + f)
        out += chunks(rng, s, "xtext:" + f, budget, 100, 3000)
    lits = []
    for f in ["date/tables.go", "language/display/tables.go", "unicode/norm/normalize_test.go",
              "unicode/bidi/bidi_test.go", "secure/precis/enforce_test.go", "cases/map_test.go",
              "internal/testtext/text.go"]:
        lits += go_literals(os.path.join(xt[-1], f))
    joined = "\n".join(lits)
    out += chunks(rng, joined, "xtext-literals", 160_000, 100, 4000)
    jsons = sorted(glob.glob(os.path.join(mc, "**", "*.json"), recursive=True))
    jsons = [p for p in jsons if os.path.getsize(p) < 200_000]
    out += files_budget(rng, jsons, "json", 60_000, per_file=4000)
    return out


MULTI = [
    "DeepSeek-V3 是一个强大的混合专家语言模型，总参数量为 6710 亿。",
    "東京は日本の首都です。カタカナとひらがなを混ぜて書きます。",
    "서울은 대한민국의 수도입니다. 한국어 문장을 토큰화합니다.",
    "مرحبا بالعالم! هذه جملة عربية مع أرقام ١٢٣٤٥ و 67890.",
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "हिन्दी में एक वाक्य: नमस्ते दुनिया।",
    "ภาษาไทย: สวัสดีชาวโลก",
    "עברית: שלום עולם",
    "Tiếng Việt: Xin chào thế giới, tôi là một mô hình ngôn ngữ.",
    "Ça va? Größe, Straße, naïve café, smörgåsbord, Ærøskøbing.",
]

EMOJI = ["😀", "👍", "👍🏻", "👍🏽", "👍🏿", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵🇨🇳", "1️⃣", "#️⃣",
         "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🧑🏾‍🚀", "👩🏼‍❤️‍💋‍👨🏽", "❤️", "✌️", "🤷‍♀️", "🫠", "🪿", "☺︎", "©️", "™"]

SPACES = ["\u0009", "\u000a", "\u000b", "\u000c", "\u000d", " ", "\u0085", "\u00a0", "\u1680", "\u2000",
          "\u2005", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
          "\u180e", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u061c", "\u001c", "\u001f"]

# One representative (or several) per class that matters to the pre-tokenizer.
ALPHABET = (list("aZqé") + ["ß", "ǅ", "ʰ", "ا", "ж", "Ω", "ㄱ", "가", "中", "の", "カ", "ー", "々", "〇", "丽"] +  # letters, CJK
            ["\u0301", "\u0308", "\u093f", "\u0e31", "\u20dd", "\ufe0f", "\U000e0100"] +  # marks
            list("0123456789") + ["١", "٣", "０", "９", "½", "²", "Ⅻ", "𝟘", "〇", "៣"] +  # numbers
            list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["、", "。", "「", "」", "—", "…", "¿", "«", "»", "·"] +  # punct
            ["€", "£", "©", "°", "±", "×", "→", "∑", "😀", "🏽", "⌘", "♥", "ー"] +  # symbols
            SPACES + ["\u0000", "\u0001", "\u007f", "\u0080", "\u009f", "\ue000", "\U0010fffd", "\ufffe", "\uffff", "\ufffd",
                      "\u0378", "\U0001e5ff", "\U000105c0", "\u1c89", "\U00011f5a"])

WORDS = ["the", "The", "hello", "world", "token", "izer", "don't", "we'll", "I'm", "it's", "x", "a", "func",
         "return", "if", "else", "Hello", "HTTP", "JSON", "naïve", "über", "Ω", "λx", "foo_bar", "fooBar", "__init__"]


def edge_cases(rng, specials):
    out = []
    # Random strings over the class alphabet: exercises every branch of the pre-tokenizer scanner.
    for i in range(4500):
        n = rng.randint(1, 40)
        s = "".join(rng.choice(ALPHABET) if rng.random() < 0.7 else rng.choice(WORDS) for _ in range(n))
        out.append(("alphabet", s))
    # Emoji with modifiers and ZWJ sequences.
    for i in range(300):
        parts = [rng.choice(EMOJI + WORDS + [" ", "  ", "\n", "!", "1", "中"]) for _ in range(rng.randint(1, 20))]
        out.append(("emoji", "".join(parts)))
    # Digit runs of every length, and digits next to letters, CJK and other number classes.
    for n in range(1, 61):
        d = "".join(rng.choice("0123456789") for _ in range(n))
        out.append(("digits", d))
        out.append(("digits", "x" + d + "y " + d + " ," + d + "中" + d))
        out.append(("digits", "٣" * (n % 7 + 1) + d + "０１２" + "½²" + d[: n // 2]))
    out.append(("digits", "".join(str(i) for i in range(2000))))
    out.append(("digits", "3.14159265358979323846264338327950288419716939937510 1,234,567.89 -0.5e-10 0x1F 1_000_000"))
    # Runs of spaces, tabs, CR/LF before words, punctuation, newlines and the end.
    ws = [" ", "\t", "\n", "\r\n", "\r", "\u3000", "\u00a0", "\u2028", "\u0085", "\u000b"]
    for i in range(1200):
        s = ""
        for _ in range(rng.randint(1, 6)):
            s += "".join(rng.choice(ws) for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 17, 40])))
            s += rng.choice(WORDS + ["!", "。", "()", "{", "1", "中文", "\u0301", "😀", ""])
        out.append(("whitespace", s))
    for n in [1, 2, 3, 4, 7, 16, 31, 64, 100, 257, 1000, 3000]:
        out.append(("spaces", " " * n))
        out.append(("spaces", "a" + " " * n + "b"))
        out.append(("spaces", "\t" * n + "x\n"))
        out.append(("spaces", "\n" * n + "  \n  y"))
        out.append(("spaces", " \r\n" * (n // 2 + 1)))
    # Special tokens inside text, and look-alikes that must stay ordinary text.
    look = ["<|User|>", "<｜User|>", "<|User｜>", "<｜User｜", "｜User｜>", "<｜user｜>", "<<｜User｜>>",
            "<｜User｜ >", "< ｜User｜>", "<|EOT|", "<|eot|>", "<|EOT|>>", "<think>", "</think>",
            "<｜begin_of_sentence｜>", "<｜begin▁of▁sentence｜", "<｜end▁of▁sentence｜><｜end▁of▁sentence｜>",
            "<｜place▁holder▁no▁800｜>", "<｜place▁holder▁no▁7999｜>", "<｜place▁holder▁no▁0｜>x",
            "<|begin_of_text|>", "<s>", "</s>", "[INST]", "<｜tool▁sep｜>", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"]
    for i in range(800):
        parts = []
        for _ in range(rng.randint(1, 10)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(specials))
            elif r < 0.6:
                parts.append(rng.choice(look))
            else:
                parts.append(rng.choice(WORDS + [" ", "\n", "  ", "<", "<｜", "｜>", ">", "1234", "中文"]))
        out.append(("special-in-text", "".join(parts)))
    for sp in specials:
        out.append(("special-each", "x" + sp + " y" + sp + sp + "\n" + sp))
    # Combining marks, Zalgo, scripts with marks, Hangul jamo, decomposed text.
    for i in range(300):
        base = rng.choice(["a", "e", "o", " ", "1", "!", "中", "\n", "ก", "क", "ᄀ", "", "\t"])
        marks = "".join(chr(rng.choice([0x300 + rng.randint(0, 0x6f), 0x93f, 0x94d, 0xe31, 0xe48, 0x1160, 0x11a8,
                                         0x20d0 + rng.randint(0, 0x20), 0xfe0f, 0x1ab0, 0x1dc0]))
                        for _ in range(rng.randint(1, 8)))
        out.append(("marks", base + marks + rng.choice(WORDS + [" x", "1", "!", ""])))
    out.append(("marks", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇ t̴̡̛e̸x̷t n\u0303o\u0301 \u1100\u1161\u11a8 \u0915\u094d\u0937"))
    # Every whitespace/format character in every context.
    for c in SPACES:
        for ctx in ["a{c}b", "{c}", "{c}{c}x", " {c}x", "{c}\nx", "x{c}", "{c} ", "1{c}2", "!{c}?", "{c}\u0301",
                    "中{c}文", "{c}{c}{c}", "{c}😀"]:
            out.append(("space-chars", ctx.replace("{c}", c)))
    # Code points whose class differs between Go's unicode tables (15.0.0) and the HF regex engine.
    diff = classes_diff_sample()
    for i in range(0, len(diff), 40):
        group = diff[i:i + 40]
        out.append(("unicode-diff", " ".join("a" + c + "b" for c in group)))
        out.append(("unicode-diff", "".join(group)))
        out.append(("unicode-diff", "".join(" " + c for c in group)))
    # A sweep over the whole code space (assigned or not), surrogates excluded.
    sweep = [chr(c) for c in range(0x80, 0x110000, 37) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(sweep), 200):
        out.append(("sweep", "".join(sweep[i:i + 200])))
        out.append(("sweep", " ".join(sweep[i:i + 100])))
    # Long pieces: one pre-token of thousands of bytes (heap BPE path).
    out.append(("long", "a" * 5000))
    out.append(("long", "abcdefghij" * 700))
    out.append(("long", "!" * 3000 + "\n\n"))
    out.append(("long", "ab" * 1000 + " " + "中文" * 1000))
    out.append(("long", "".join(rng.choice("abcdefghijklmnopqrstuvwxyzé") for _ in range(8000))))
    # Multilingual sentences mixed together.
    for i in range(300):
        out.append(("multi", " ".join(rng.choice(MULTI) for _ in range(rng.randint(1, 5)))))
    # JSON documents.
    for i in range(150):
        out.append(("json-gen", json.dumps(rand_json(rng, 4), ensure_ascii=rng.random() < 0.3,
                                           indent=rng.choice([None, 2, 4, "\t"]))))
    # CRLF documents.
    for i in range(60):
        out.append(("crlf", "\r\n".join(rng.choice(WORDS + MULTI + ["", "  ", "\t}"]) for _ in range(rng.randint(1, 30)))))
    return out


def rand_json(rng, depth):
    r = rng.random()
    if depth == 0 or r < 0.3:
        return rng.choice([rng.randint(-10**9, 10**12), rng.random() * 1e6, True, False, None,
                           rng.choice(WORDS + MULTI + EMOJI + ["", "a\nb", "tab\there", "\"quoted\""])])
    if r < 0.65:
        return {rng.choice(WORDS + ["id", "name", "value", "名前", "items"]) + str(i): rand_json(rng, depth - 1)
                for i in range(rng.randint(0, 5))}
    return [rand_json(rng, depth - 1) for _ in range(rng.randint(0, 5))]


def classes_diff_sample():
    """Code points the HF regex engine puts in a class while Go 1.26 (Unicode 15.0.0) does not:
    read from the generated unicode_tables.go and Go's tables via a tiny Go program."""
    prog = r'''package main
import ("fmt";"unicode")
func main(){
 for c:=rune(0);c<0x110000;c++{
  if c>=0xD800&&c<=0xDFFF {continue}
  m:=0
  if unicode.IsLetter(c){m|=1}; if unicode.IsMark(c){m|=2}; if unicode.IsNumber(c){m|=4}
  if unicode.IsPunct(c){m|=8}; if unicode.IsSymbol(c){m|=16}; if unicode.IsSpace(c){m|=32}
  if m!=0 {fmt.Printf("%x %d\n",c,m)}
 }
}'''
    d = "/tmp/dsgate-gen-golden-go"
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "main.go"), "w") as f:
        f.write(prog)
    with open(os.path.join(d, "go.mod"), "w") as f:
        f.write("module gengolden\ngo 1.22\n")
    goout = subprocess.check_output(["go", "run", "."], cwd=d, text=True)
    gomask = {}
    for line in goout.split("\n"):
        if line:
            a, b = line.split()
            gomask[int(a, 16)] = int(b)
    onig = {}
    src = read(os.path.join(HERE, "..", "unicode_tables.go"))
    for lo, hi, m in re.findall(r"\{0x([0-9A-F]+), 0x([0-9A-F]+), (\d+)\}", src):
        for c in range(int(lo, 16), int(hi, 16) + 1):
            onig[c] = int(m)
    diff = sorted(c for c in set(gomask) | set(onig) if gomask.get(c, 0) != onig.get(c, 0))
    print("unicode classes: %d code points differ between Go and the HF regex engine" % len(diff), file=sys.stderr)
    return [chr(c) for c in diff]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=default_dir())
    args = ap.parse_args()
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    hft = AutoTokenizer.from_pretrained(args.tokenizer)
    rng = random.Random(20260127)
    added = json.load(open(os.path.join(args.tokenizer, "tokenizer.json"), encoding="utf-8"))["added_tokens"]
    specials = [a["content"] for a in added]
    samples = real_text(rng) + edge_cases(rng, specials)
    total = sum(len(s.encode("utf-8")) for _, s in samples)
    print("corpus: %d samples, %d bytes" % (len(samples), total), file=sys.stderr)
    encs = tok.encode_batch([s for _, s in samples], add_special_tokens=False)
    mismatch = 0
    with gz_writer(os.path.join(HERE, "corpus.jsonl.gz")) as f:
        for i, ((name, s), e) in enumerate(zip(samples, encs)):
            if i % 7 == 0:
                ids2 = hft.encode(s, add_special_tokens=False)
                if ids2 != e.ids:
                    mismatch += 1
            f.write(json.dumps({"name": name, "text": s, "ids": e.ids}, ensure_ascii=False) + "\n")
    if mismatch:
        sys.exit("transformers and tokenizers disagree on %d samples" % mismatch)
    # Decoding: corpus ids with special tokens spliced in, and random ids (incl. lone byte tokens
    # that make invalid UTF-8).
    byte_ids = [tok.token_to_id(t) for t in byte_alphabet()]
    special_ids = [a["id"] for a in added]
    seqs = []
    for e in rng.sample(encs, 300):
        ids = list(e.ids[:200])
        for _ in range(rng.randint(0, 4)):
            ids.insert(rng.randint(0, len(ids)), rng.choice(special_ids))
        seqs.append(ids)
    for _ in range(700):
        ids = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            if r < 0.5:
                ids.append(rng.choice(byte_ids))
            elif r < 0.6:
                ids.append(rng.choice(special_ids))
            else:
                ids.append(rng.randrange(0, 128000))
        seqs.append(ids)
    with gz_writer(os.path.join(HERE, "decode.jsonl.gz")) as f:
        for ids in seqs:
            for skip in (False, True):
                text = tok.decode(ids, skip_special_tokens=skip)
                if hft.decode(ids, skip_special_tokens=skip) != text:
                    sys.exit("transformers and tokenizers decode differently: %r" % ids)
                f.write(json.dumps({"ids": ids, "skip_special": skip, "text": text}, ensure_ascii=False) + "\n")


def byte_alphabet():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


if __name__ == "__main__":
    main()
