// report.html's question table and question view. All data is untrusted text (model answers,
// dataset questions): it is read with JSON.parse from an inert script block and put into the
// page with textContent only, never as markup. No network, no eval, no inline handlers.
(function () {
  "use strict";
  var dataNode = document.getElementById("qdata");
  var table = document.getElementById("q-table");
  if (!dataNode || !table) return;
  var DATA = JSON.parse(dataNode.textContent);
  if (!DATA.benchmarks.length) return;

  var PAGE = 300; // rows rendered at a time; the rest on "show more"
  var CELL = {
    right: ["✓", "right"], wrong: ["✗", "wrong"], truncated: ["truncated", "truncated"],
    no_answer: ["no answer", "no answer"], error: ["error", "server error: no answer"],
    missing: ["·", "not asked or not in the run"]
  };
  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    bench: $("f-bench"), cat: $("f-cat"), pair: $("f-pair"), rel: $("f-rel"),
    trunc: $("f-trunc"), search: $("f-search"), sort: $("f-sort"),
    count: $("q-count"), pairCounts: $("q-pair-counts"), more: $("q-more"), view: $("qview")
  };
  var state = { bench: null, rows: [], shown: 0, current: -1 };

  // ------------------------------------------------------------------ DOM helpers (text only)

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function option(select, value, label) {
    var node = el("option", null, label);
    node.value = value;
    select.appendChild(node);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmt(value, digits) {
    if (value === null || value === undefined) return "—";
    return Number(value).toLocaleString("en-US", { minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0 });
  }
  // A trimmed text: head, a note on what was left out and where the full text is, tail.
  function textBlock(tag, t, where) {
    var node = el(tag, "text");
    if (!t) { node.textContent = "—"; return node; }
    if (!t.omitted) { node.textContent = t.text; return node; }
    node.appendChild(document.createTextNode(t.text.slice(0, t.at)));
    node.appendChild(el("span", "omitted", "\n[… " + fmt(t.omitted) + " of " + fmt(t.chars) +
      " characters left out here; the full text is in " + where + " …]\n"));
    node.appendChild(document.createTextNode(t.text.slice(t.at)));
    return node;
  }

  // ------------------------------------------------------------------ filters

  function bench() { return DATA.benchmarks[state.bench]; }
  function pair() {
    var value = ui.pair.value;
    return value === "" ? null : bench().pairs[Number(value)];
  }
  function answered(q, model) { return q.paired[model] === true || q.paired[model] === false; }
  function disagree(q, a, b) { return answered(q, a) && answered(q, b) && q.paired[a] !== q.paired[b]; }
  function anyDisagreement(q) {
    var pairs = bench().pairs;
    for (var i = 0; i < pairs.length; i++) if (disagree(q, pairs[i].a, pairs[i].b)) return true;
    return false;
  }
  function isDisagreement(q) {
    var p = pair();
    return p ? disagree(q, p.a, p.b) : anyDisagreement(q);
  }
  function searchText(q) {
    if (q._search === undefined) {
      var parts = [q.id, q.category || "", q.text.text].concat(q.options);
      DATA.models.forEach(function (m) {
        (q.answers[m] || []).forEach(function (a) {
          if (a.content) parts.push(a.content.text);
          if (a.extracted) parts.push(a.extracted.text);
        });
      });
      q._search = parts.join("\n").toLowerCase();
    }
    return q._search;
  }
  function pairedAnswer(q, model) {
    var list = q.answers[model] || [];
    for (var i = 0; i < list.length; i++) if (list[i].status !== "server_error") return list[i];
    return list[0] || null;
  }
  function maxOf(q, key) {
    var best = null;
    DATA.models.forEach(function (m) {
      var a = pairedAnswer(q, m);
      if (a && a[key] != null && (best === null || a[key] > best)) best = a[key];
    });
    return best;
  }
  function passesBase(q) { // every filter but the pair relation
    if (ui.cat.value && q.category !== ui.cat.value) return false;
    if (ui.trunc.checked && !DATA.models.some(function (m) { return q.cells[m] === "truncated" ||
        (q.answers[m] || []).some(function (a) { return a.truncated; }); })) return false;
    var needle = ui.search.value.trim().toLowerCase();
    if (needle && searchText(q).indexOf(needle) < 0) return false;
    return true;
  }
  function passesRelation(q) {
    var rel = ui.rel.value, p = pair();
    if (rel === "all") return true;
    if (rel === "disagree") return isDisagreement(q);
    if (!p) return false;
    if (rel === "a_only") return disagree(q, p.a, p.b) && q.paired[p.a] === true;
    return disagree(q, p.a, p.b) && q.paired[p.b] === true;
  }

  // ------------------------------------------------------------------ the table

  function setupBenchmark(index) {
    state.bench = index;
    var b = bench();
    clear(ui.cat); option(ui.cat, "", "all");
    var cats = {};
    b.questions.forEach(function (q) { if (q.category) cats[q.category] = true; });
    Object.keys(cats).sort().forEach(function (c) { option(ui.cat, c, c); });
    ui.cat.disabled = Object.keys(cats).length === 0;
    clear(ui.pair); option(ui.pair, "", "any pair");
    b.pairs.forEach(function (p, i) { option(ui.pair, String(i), p.a + " vs " + p.b); });
    var thead = table.tHead; clear(thead);
    var head = el("tr");
    ["question", "category", "text"].concat(DATA.models).concat(["max tokens", "max latency (s)"])
      .forEach(function (label) { head.appendChild(el("th", null, label)); });
    thead.appendChild(head);
    update();
  }

  function update() {
    var b = bench(), p = pair();
    ui.rel.options[2].disabled = ui.rel.options[3].disabled = !p;
    if (!p && (ui.rel.value === "a_only" || ui.rel.value === "b_only")) ui.rel.value = "disagree";
    if (p) {
      ui.rel.options[2].textContent = p.a + " right and " + p.b + " wrong";
      ui.rel.options[3].textContent = p.b + " right and " + p.a + " wrong";
    }
    var base = b.questions.filter(passesBase);
    var rows = base.filter(passesRelation);
    var key = ui.sort.value;
    if (key !== "order") {
      var field = key === "tokens" ? "tokens" : "latency_s";
      rows = rows.map(function (q, i) { return [maxOf(q, field), i, q]; })
        .sort(function (x, y) { return (y[0] === null ? -1 : y[0]) - (x[0] === null ? -1 : x[0]) || x[1] - y[1]; })
        .map(function (x) { return x[2]; });
    }
    state.rows = rows;
    ui.count.textContent = "Showing " + fmt(rows.length) + " of " + fmt(b.questions.length) + " questions";
    ui.count.dataset.shown = String(rows.length);
    clear(ui.pairCounts);
    if (p) {
      var aOnly = base.filter(function (q) { return disagree(q, p.a, p.b) && q.paired[p.a] === true; }).length;
      var bOnly = base.filter(function (q) { return disagree(q, p.a, p.b) && q.paired[p.b] === true; }).length;
      ui.pairCounts.dataset.aOnly = String(aOnly);
      ui.pairCounts.dataset.bOnly = String(bOnly);
      ui.pairCounts.textContent = "With these filters, " + p.a + " vs " + p.b + ": " + p.a + " right and " +
        p.b + " wrong on " + fmt(aOnly) + ", " + p.b + " right and " + p.a + " wrong on " + fmt(bOnly) +
        " (the report, over all " + fmt(p.n) + " questions both answered: " + fmt(p.a_only) + " and " +
        fmt(p.b_only) + ").";
    } else {
      delete ui.pairCounts.dataset.aOnly; delete ui.pairCounts.dataset.bOnly;
    }
    clear(table.tBodies[0]);
    state.shown = 0;
    renderMore();
  }

  function renderMore() {
    var body = table.tBodies[0], frag = document.createDocumentFragment();
    var end = Math.min(state.rows.length, state.shown + PAGE);
    for (var i = state.shown; i < end; i++) frag.appendChild(row(state.rows[i], i));
    body.appendChild(frag);
    state.shown = end;
    ui.more.hidden = end >= state.rows.length;
    ui.more.textContent = "show " + fmt(Math.min(PAGE, state.rows.length - end)) + " more of " +
      fmt(state.rows.length - end);
  }

  function row(q, index) {
    var tr = el("tr");
    tr.tabIndex = 0;
    tr.dataset.index = String(index);
    tr.dataset.id = q.id;
    if (isDisagreement(q)) tr.classList.add("disagree");
    tr.appendChild(el("td", "id", q.id));
    tr.appendChild(el("td", "cat", q.category || ""));
    var excerpt = q.text.text.replace(/\s+/g, " ").trim();
    tr.appendChild(el("td", "excerpt", excerpt.length > 110 ? excerpt.slice(0, 110) + "…" : excerpt));
    DATA.models.forEach(function (m) {
      var kind = q.cells[m] || "missing";
      var td = el("td", "cell " + kind, CELL[kind][0]);
      var a = pairedAnswer(q, m);
      td.title = m + ": " + CELL[kind][1] + (a && a.tokens != null ? ", " + a.tokens + " tokens" : "");
      td.dataset.model = m;
      tr.appendChild(td);
    });
    tr.appendChild(el("td", "num", fmt(maxOf(q, "tokens"))));
    tr.appendChild(el("td", "num", fmt(maxOf(q, "latency_s"), 1)));
    return tr;
  }

  // ------------------------------------------------------------------ the question view

  function fact(list, label, value) {
    if (value === null || value === undefined || value === "") return;
    list.appendChild(el("dt", null, label));
    list.appendChild(el("dd", null, value));
  }

  function answerCard(q, model, a, isPaired, where) {
    var card = el("article", "answer");
    var kind = isPaired ? q.cells[model] : (a.correct ? "right" : a.status === "server_error" ? "error" : "wrong");
    var title = el("h4", null, model + (q.answers[model].length > 1 ? " · sample " + a.sample : ""));
    title.appendChild(el("span", "badge " + kind, CELL[kind][0] + (kind === "right" || kind === "wrong" ? " " + CELL[kind][1] : "")));
    card.appendChild(title);
    var facts = el("dl", "facts");
    var isCode = bench().benchmark === "humaneval";
    fact(facts, "score status", a.status.replace(/_/g, " "));
    if (!isCode) fact(facts, "extracted", a.extracted ? a.extracted.text : "none");
    fact(facts, "how", a.rule);
    fact(facts, "finish reason", a.finish_reason);
    fact(facts, "tokens", a.tokens == null ? null : fmt(a.tokens));
    fact(facts, "latency", a.latency_s == null ? null : fmt(a.latency_s, 2) + " s");
    if (isCode) fact(facts, "sandbox", a.status + (a.run_s == null ? "" : " in " + fmt(a.run_s, 2) + " s"));
    if (isPaired && q.answers[model].length > 1) fact(facts, "paired tests", "use this sample");
    card.appendChild(facts);
    if (a.error) card.appendChild(el("p", "error", "No answer from the server: " + a.error));
    if (a.detail) { card.appendChild(el("h5", null, isCode ? "Sandbox outcome" : "Scoring note")); card.appendChild(textBlock("pre", a.detail, "scores.jsonl")); }
    if (isCode && a.extracted) {
      card.appendChild(el("h5", null, "Code that ran (after the prompt)"));
      card.appendChild(textBlock("pre", a.extracted, "scores.jsonl"));
    }
    card.appendChild(el("h5", null, "Final answer"));
    card.appendChild(textBlock("pre", a.content, where));
    if (a.reasoning) {
      var details = el("details", "reasoning");
      details.appendChild(el("summary", null, "Reasoning (" + fmt(a.reasoning.chars) + " characters" +
        (a.reasoning_source ? ", from " + a.reasoning_source : "") + ")"));
      details.appendChild(textBlock("pre", a.reasoning, where));
      card.appendChild(details);
    }
    return card;
  }

  function openQuestion(index) {
    if (index < 0 || index >= state.rows.length) return;
    while (index >= state.shown) renderMore();
    state.current = index;
    var q = state.rows[index], b = bench(), view = ui.view;
    clear(view);
    view.hidden = false;
    view.dataset.id = q.id;
    var head = el("div", "qv-head");
    head.appendChild(el("h3", null, b.label + " · " + q.id + (q.category ? " · " + q.category : "")));
    var nav = el("div", "nav");
    [["◀ previous disagreement", function () { step(-1); }], ["next disagreement ▶", function () { step(1); }],
     ["close", closeQuestion]].forEach(function (x) {
      var button = el("button", null, x[0]); button.type = "button"; button.addEventListener("click", x[1]); nav.appendChild(button);
    });
    head.appendChild(nav);
    view.appendChild(head);
    view.appendChild(textBlock("pre", q.text, "items.jsonl"));
    if (q.options.length) {
      var list = el("ol", "options");
      q.options.forEach(function (o, i) {
        var letter = String.fromCharCode(65 + i);
        var li = el("li", letter === q.gold ? "gold" : null, letter + ". " + o + (letter === q.gold ? "  ← correct" : ""));
        list.appendChild(li);
      });
      view.appendChild(list);
    }
    if (q.gold) view.appendChild(el("p", "gold-line", "Correct answer: " + q.gold));
    if (q.entry_point) view.appendChild(el("p", "gold-line", "Entry point: " + q.entry_point));
    var grid = el("div", "answers");
    DATA.models.forEach(function (m) {
      var column = el("div", "column");
      column.dataset.model = m;
      var list = q.answers[m] || [];
      if (!list.length) column.appendChild(el("p", "note", m + ": no answer recorded"));
      var chosen = pairedAnswer(q, m);
      list.forEach(function (a) { column.appendChild(answerCard(q, m, a, a === chosen, b.transcripts[m])); });
      grid.appendChild(column);
    });
    view.appendChild(grid);
    var rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) rows[i].classList.toggle("current", i === index);
    view.scrollIntoView({ block: "start" });
  }

  function closeQuestion() {
    ui.view.hidden = true;
    var current = table.tBodies[0].rows[state.current];
    state.current = -1;
    if (current) { current.classList.remove("current"); current.focus(); }
  }

  function step(direction) {
    for (var i = state.current + direction; i >= 0 && i < state.rows.length; i += direction) {
      if (isDisagreement(state.rows[i])) { openQuestion(i); return; }
    }
  }

  // ------------------------------------------------------------------ wiring

  DATA.benchmarks.forEach(function (b, i) { option(ui.bench, String(i), b.label + " (" + b.questions.length + ")"); });
  ui.bench.addEventListener("change", function () { closeQuestion(); setupBenchmark(Number(ui.bench.value)); });
  [ui.cat, ui.pair, ui.rel, ui.trunc, ui.sort].forEach(function (node) {
    node.addEventListener("change", function () { closeQuestion(); update(); });
  });
  ui.search.addEventListener("input", function () { closeQuestion(); update(); });
  $("filters").addEventListener("submit", function (event) { event.preventDefault(); });
  ui.more.addEventListener("click", renderMore);
  table.tBodies[0].addEventListener("click", function (event) {
    var tr = event.target.closest("tr");
    if (tr) openQuestion(Number(tr.dataset.index));
  });
  table.tBodies[0].addEventListener("keydown", function (event) {
    var tr = event.target.closest("tr");
    if (tr && event.key === "Enter") openQuestion(Number(tr.dataset.index));
  });
  document.addEventListener("keydown", function (event) {
    var tag = event.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "n" || event.key === "j") step(1);
    else if (event.key === "p" || event.key === "k") step(-1);
    else if (event.key === "Escape" && !ui.view.hidden) closeQuestion();
    else return;
    event.preventDefault();
  });
  setupBenchmark(0);
  document.body.dataset.ready = "1";
  if (window.performance && performance.mark) performance.mark("qatcmp-table-rendered");
})();
