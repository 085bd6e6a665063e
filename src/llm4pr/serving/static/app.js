// The llm4pr playground: posts the request in the text box to /v1/post-rank?explain=true and shows
// the given and the post-ranked order side by side, with each candidate's field attributions.
// Plain DOM (no framework, no build step); every value from the API or the request is set as text,
// never as HTML. API errors are shown as the server words them.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_BARS = 6; // attribution bars shown per candidate before the "more fields" fold
  let examples = [];

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function authHeaders() {
    const token = $("token").value.trim();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  // The message of an error answer: the API's {"error": {"status", "message"}}, else the raw text.
  async function errorOf(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error && typeof body.error.message === "string") {
        return { status: `HTTP ${body.error.status || response.status}`, message: body.error.message };
      }
    } catch (_) {
      // not JSON: shown as it came
    }
    return { status: `HTTP ${response.status}`, message: text || response.statusText };
  }

  function showError(status, message) {
    $("error-status").textContent = status;
    $("error-message").textContent = message;
    $("error").hidden = false;
  }

  function hideError() {
    $("error").hidden = true;
    $("error-status").textContent = "";
    $("error-message").textContent = "";
  }

  // --- sample requests (GET /v1/examples) --------------------------------------------------------

  async function loadExamples() {
    const select = $("example-select");
    const status = $("examples-status");
    let response;
    try {
      response = await fetch("v1/examples", { headers: authHeaders() });
    } catch (err) {
      status.textContent = `samples not loaded: ${err.message}`;
      return;
    }
    select.replaceChildren();
    if (!response.ok) {
      const { message } = await errorOf(response);
      select.append(el("option", "", "(no samples)"));
      select.value = "";
      status.textContent =
        response.status === 401 ? "type the bearer token to load the samples" : `samples not loaded: ${message}`;
      return;
    }
    examples = (await response.json()).examples || [];
    if (examples.length === 0) {
      select.append(el("option", "", "(none: start the server with --examples FILE)"));
      status.textContent = "";
      return;
    }
    select.append(el("option", "", "(pick one)"));
    examples.forEach((request, index) => {
      const count = Array.isArray(request.candidates) ? request.candidates.length : 0;
      const option = el("option", "", `${request.request_id}: "${request.query}" (${count} candidates)`);
      option.value = String(index);
      select.append(option);
    });
    status.textContent = `${examples.length} samples`;
  }

  function pickExample() {
    const index = $("example-select").value;
    if (index === "") return;
    $("request-text").value = JSON.stringify(examples[Number(index)], null, 2);
    hideError();
  }

  // --- ranking (POST /v1/post-rank?explain=true) --------------------------------------------------

  async function rank() {
    const text = $("request-text").value;
    const params = new URLSearchParams({ explain: "true" });
    if ($("mode").value) params.set("mode", $("mode").value);
    const button = $("rank-button");
    const results = $("results");
    hideError();
    results.replaceChildren();
    results.dataset.state = "ranking";
    button.disabled = true;
    $("status").textContent = "ranking...";
    const started = performance.now();
    try {
      let response;
      try {
        response = await fetch(`v1/post-rank?${params}`, {
          method: "POST",
          headers: { "Content-Type": "application/json", ...authHeaders() },
          body: text,
        });
      } catch (err) {
        showError("no answer", `could not reach the server: ${err.message}`);
        results.dataset.state = "error";
        $("status").textContent = "";
        return;
      }
      if (!response.ok) {
        const { status, message } = await errorOf(response);
        showError(status, message);
        results.dataset.state = "error";
        $("status").textContent = "";
        return;
      }
      const body = await response.json();
      let sent = null;
      try {
        sent = JSON.parse(text); // the server parsed it, so this does too
      } catch (_) {
        sent = null;
      }
      const answers = Array.isArray(body) ? body : [body];
      const requests = Array.isArray(sent) ? sent : [sent];
      answers.forEach((answer, i) => results.append(renderAnswer(answer, requests[i] || null)));
      const elapsed = performance.now() - started;
      const server = answers.map((a) => a.latency_ms.toFixed(0)).join(", ");
      $("status").textContent = `ranked in ${elapsed.toFixed(0)} ms (server: ${server} ms)`;
      results.dataset.state = "done";
    } finally {
      button.disabled = false;
    }
  }

  // --- rendering ----------------------------------------------------------------------------------

  // A short human label for a candidate: its title, name or text, else its first string feature.
  function labelOf(candidate) {
    const features = (candidate && candidate.features) || {};
    const preferred = ["title", "name", "text"].find((key) => typeof features[key] === "string");
    const key = preferred || Object.keys(features).find((k) => typeof features[k] === "string");
    if (!key) return "";
    const value = features[key];
    return value.length > 70 ? `${value.slice(0, 69)}…` : value;
  }

  function formatNumber(value) {
    if (value === null || value === undefined) return "";
    const magnitude = Math.abs(value);
    return magnitude !== 0 && (magnitude < 0.01 || magnitude >= 1e4) ? value.toExponential(2) : value.toFixed(3);
  }

  // The method whose bars are drawn: the first available one with fields, else the first available.
  function chosenMethod(attributions) {
    const entries = Object.entries(attributions || {}).filter(([, a]) => a && a.available);
    return entries.find(([, a]) => a.fields && a.fields.length > 0) || entries[0] || null;
  }

  function termsText(terms) {
    return Object.entries(terms || {})
      .map(([name, value]) => `${name} ${formatNumber(value)}`)
      .join(", ");
  }

  // Horizontal bars of one attribution, scaled to `scale` (the largest |value| of this method in
  // the answer); signed methods grow left (negative) or right (positive) of a centre line.
  function renderBars(method, attribution, scale, signed) {
    const box = el("div", "attribution");
    box.dataset.method = method;
    box.append(el("div", "method", method));
    const fields = [...attribution.fields].sort((a, b) => Math.abs(b.value) - Math.abs(a.value));
    const shown = fields.slice(0, MAX_BARS);
    const rest = fields.slice(MAX_BARS);
    // a ranker that mixes user and item fields in one attribution (LambdaMART): say which are the user's
    const mixed = new Set(fields.map((f) => f.owner)).size > 1;
    const row = (field) => {
      const line = el("div", "bar-row");
      const name = mixed && field.owner !== "item" && !field.name.startsWith(`${field.owner}.`) ? `${field.owner}.${field.name}` : field.name;
      line.title = field.features && field.features.length ? `${name}: schema features ${field.features.join(", ")}` : name;
      line.append(el("span", "bar-label", name));
      const track = el("span", signed ? "bar-track signed" : "bar-track");
      const bar = el("span", field.value < 0 ? "attr-bar negative" : "attr-bar");
      const share = scale > 0 ? Math.abs(field.value) / scale : 0;
      if (signed) {
        bar.style.width = `${(share * 50).toFixed(2)}%`;
        bar.style.left = field.value < 0 ? `${(50 - share * 50).toFixed(2)}%` : "50%";
      } else {
        bar.style.width = `${(share * 100).toFixed(2)}%`;
      }
      track.append(bar);
      line.append(track, el("span", "bar-value", formatNumber(field.value)));
      return line;
    };
    shown.forEach((field) => box.append(row(field)));
    if (rest.length > 0) {
      const more = el("details", "more-fields");
      more.append(el("summary", "", `${rest.length} more fields`));
      rest.forEach((field) => more.append(row(field)));
      box.append(more);
    }
    if (attribution.fields.length === 0 && attribution.reason) box.append(el("div", "hint", attribution.reason));
    const terms = termsText(attribution.terms);
    if (terms) box.append(el("div", "terms", `not fields: ${terms}`));
    return box;
  }

  // Per method, the largest |value| over every candidate (and the user), and whether any is negative.
  function scalesOf(explanations) {
    const scales = {};
    const visit = (attributions) => {
      Object.entries(attributions || {}).forEach(([method, attribution]) => {
        const entry = (scales[method] = scales[method] || { scale: 0, signed: false });
        (attribution.fields || []).forEach((field) => {
          entry.scale = Math.max(entry.scale, Math.abs(field.value));
          entry.signed = entry.signed || field.value < 0;
        });
      });
    };
    (explanations.candidates || []).forEach((c) => visit(c.attributions));
    return scales;
  }

  function moveBadge(before, after) {
    const moved = before - after;
    if (moved > 0) return el("span", "move up", `▲ +${moved}`);
    if (moved < 0) return el("span", "move down", `▼ ${moved}`);
    return el("span", "move same", "= 0");
  }

  function renderAnswer(answer, request) {
    const section = el("section", "answer");
    section.dataset.requestId = answer.request_id;
    const explanations = answer.explanations || null;
    const ranker = explanations ? explanations.ranker : answer.mode;
    section.append(el("h2", "", `${answer.request_id}`));

    const meta = el("p", "meta");
    const mode = answer.mode === ranker ? "" : `, mode ${answer.mode}`; // a baseline's mode is its name
    meta.append(`ranked by ${ranker}${mode}, server ${answer.latency_ms.toFixed(1)} ms`);
    if (explanations && explanations.score) meta.append(el("span", "hint", ` · score: ${explanations.score}`));
    section.append(meta);
    if (answer.fallback) {
      section.append(el("p", "warning", `fallback (${answer.fallback_reason}): the ranking-stage order, not the ranker's`));
    }

    // the order sent: the request's candidates, else rebuilt from the explanation's positions
    const given = request && Array.isArray(request.candidates)
      ? request.candidates.map((c) => ({ id: String(c.id), label: labelOf(c) }))
      : explanations
        ? [...explanations.candidates].sort((a, b) => a.position_before - b.position_before).map((c) => ({ id: c.id, label: "" }))
        : answer.ranking.map((id) => ({ id, label: "" }));
    const labels = Object.fromEntries(given.map((c) => [c.id, c.label]));
    const before = Object.fromEntries(given.map((c, i) => [c.id, i + 1]));
    const after = Object.fromEntries(answer.ranking.map((id, i) => [id, i + 1]));
    const explained = explanations ? Object.fromEntries(explanations.candidates.map((c) => [c.id, c])) : {};
    const scales = explanations ? scalesOf(explanations) : {};

    const user = explanations && chosenMethod(explanations.user);
    if (user) {
      const [method, attribution] = user;
      const box = el("div", "user-attribution");
      box.append(el("h3", "", "User fields"));
      const top = Math.max(0, ...attribution.fields.map((f) => Math.abs(f.value)));
      box.append(renderBars(method, attribution, top, attribution.fields.some((f) => f.value < 0)));
      section.append(box);
    }

    const columns = el("div", "columns");
    const givenColumn = el("div", "column given");
    givenColumn.append(el("h3", "", "Given order"));
    const givenList = el("ol", "given-order");
    given.forEach((c) => {
      const item = el("li", "candidate");
      item.dataset.id = c.id;
      item.append(el("span", "pos", `${before[c.id]}.`), el("span", "cand-id", c.id));
      if (c.label) item.append(el("span", "cand-label", c.label));
      item.append(el("span", "goes", `→ ${after[c.id] ?? "?"}`));
      givenList.append(item);
    });
    givenColumn.append(givenList);

    const rankedColumn = el("div", "column ranked");
    rankedColumn.append(el("h3", "", "Post-ranked order"));
    const rankedList = el("ol", "ranked-order");
    answer.ranking.forEach((id, i) => {
      const item = el("li", "candidate");
      item.dataset.id = id;
      const head = el("div", "cand-head");
      head.append(el("span", "pos", `${i + 1}.`), el("span", "cand-id", id));
      if (labels[id]) head.append(el("span", "cand-label", labels[id]));
      const score = answer.scores ? answer.scores[i] : explained[id] ? explained[id].score : null;
      if (score !== null && score !== undefined) head.append(el("span", "score", `score ${formatNumber(score)}`));
      head.append(moveBadge(before[id] ?? i + 1, i + 1));
      item.append(head);
      const chosen = explained[id] && chosenMethod(explained[id].attributions);
      if (chosen) {
        const [method, attribution] = chosen;
        item.append(renderBars(method, attribution, scales[method].scale, scales[method].signed));
        const others = Object.entries(explained[id].attributions)
          .filter(([name, a]) => name !== method && a.available)
          .map(([name, a]) => `${name}${termsText(a.terms) ? ` (${termsText(a.terms)})` : ""}`);
        if (others.length) item.append(el("div", "terms", `also: ${others.join("; ")}`));
      } else if (explained[id]) {
        const reasons = Object.entries(explained[id].attributions).map(([name, a]) => `${name}: ${a.reason || "not available"}`);
        item.append(el("div", "hint", reasons.join("; ") || "no attribution"));
      }
      rankedList.append(item);
    });
    rankedColumn.append(rankedList);
    columns.append(givenColumn, rankedColumn);
    section.append(columns);

    // hovering a candidate on one side marks it on the other
    section.addEventListener("mouseover", (event) => {
      const item = event.target.closest && event.target.closest("li.candidate");
      section.querySelectorAll("li.candidate.hover").forEach((node) => node.classList.remove("hover"));
      if (item) section.querySelectorAll(`li.candidate`).forEach((node) => {
        if (node.dataset.id === item.dataset.id) node.classList.add("hover");
      });
    });

    if (explanations && explanations.not_attributed && explanations.not_attributed.length) {
      const details = el("details", "not-attributed");
      details.append(el("summary", "", "Read by the ranker but not attributed"));
      const list = el("ul");
      explanations.not_attributed.forEach((line) => list.append(el("li", "", line)));
      details.append(list);
      section.append(details);
    }
    return section;
  }

  // --- wiring -------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("example-select").addEventListener("change", pickExample);
    $("rank-button").addEventListener("click", rank);
    $("token").addEventListener("change", () => loadExamples());
    $("request-text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        rank();
      }
    });
    loadExamples();
  });
})();
