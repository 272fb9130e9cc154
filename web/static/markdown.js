// A small Markdown renderer that is safe by construction: it builds DOM nodes and sets
// only textContent and vetted attributes, never innerHTML, so neither model output nor
// user text can inject markup or script. It covers what chat answers use: fenced code
// blocks, headings, lists, block quotes, paragraphs, inline code, bold, italic and
// http(s)/mailto links.
"use strict";

(function (global) {
  function el(tag, cls) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    return e;
  }

  const inlineRe = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+?)\*\*|__([^_]+?)__|\*([^*\s][^*]*?)\*|_([^_\s][^_]*?)_|\[([^\]]+)\]\(([^)\s]+)\)/g;

  function safeHref(url) {
    try {
      const u = new URL(url, "http://invalid.invalid/");
      if (u.protocol === "http:" || u.protocol === "https:" || u.protocol === "mailto:") {
        return u.origin === "http://invalid.invalid" ? null : u.href;
      }
    } catch (e) { /* not a URL */ }
    return null;
  }

  // renderInline appends text with inline formatting to parent.
  function renderInline(parent, text) {
    let last = 0;
    inlineRe.lastIndex = 0;
    let m;
    while ((m = inlineRe.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[1] !== undefined) {
        const c = el("code");
        c.textContent = m[2];
        parent.appendChild(c);
      } else if (m[3] !== undefined || m[4] !== undefined) {
        const s = el("strong");
        renderInline(s, m[3] !== undefined ? m[3] : m[4]);
        parent.appendChild(s);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const s = el("em");
        renderInline(s, m[5] !== undefined ? m[5] : m[6]);
        parent.appendChild(s);
      } else {
        const href = safeHref(m[8]);
        if (href) {
          const a = el("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          a.textContent = m[7];
          parent.appendChild(a);
        } else {
          parent.appendChild(document.createTextNode(m[0]));
        }
      }
      last = inlineRe.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // render returns a DocumentFragment for the Markdown source src.
  function render(src) {
    const frag = document.createDocumentFragment();
    const lines = String(src).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    let para = [];
    const flushPara = () => {
      if (para.length === 0) return;
      const p = el("p");
      para.forEach((l, k) => {
        if (k > 0) p.appendChild(el("br"));
        renderInline(p, l);
      });
      frag.appendChild(p);
      para = [];
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/);
      if (fence) {
        flushPara();
        const close = fence[1];
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(close)) body.push(lines[i++]);
        i++; // the closing fence (or end of text while streaming)
        const pre = el("pre");
        const code = el("code");
        if (fence[2]) {
          code.className = "language-" + fence[2].replace(/[^\w+#.-]/g, "");
          pre.dataset.lang = fence[2];
        }
        code.textContent = body.join("\n");
        pre.appendChild(code);
        frag.appendChild(pre);
        continue;
      }
      const h = line.match(/^(#{1,6})\s+(.*)$/);
      if (h) {
        flushPara();
        const e = el("h" + Math.min(6, h[1].length + 2));
        renderInline(e, h[2]);
        frag.appendChild(e);
        i++;
        continue;
      }
      const li = line.match(/^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/);
      if (li) {
        flushPara();
        const ordered = /\d/.test(li[1]);
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length) {
          const m = lines[i].match(/^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/);
          if (!m || /\d/.test(m[1]) !== ordered) break;
          const item = el("li");
          renderInline(item, m[2]);
          list.appendChild(item);
          i++;
        }
        frag.appendChild(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        flushPara();
        const q = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) q.push(lines[i++].replace(/^\s*>\s?/, ""));
        const bq = el("blockquote");
        bq.appendChild(render(q.join("\n")));
        frag.appendChild(bq);
        continue;
      }
      if (line.trim() === "") {
        flushPara();
      } else {
        para.push(line);
      }
      i++;
    }
    flushPara();
    return frag;
  }

  global.dsgateMarkdown = { render: render };
})(window);
