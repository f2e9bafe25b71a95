// The chat page: POST the whole conversation to /bedrock/<family>/ and append the streamed text live.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const familySelect = $("family");
  const modelId = $("model-id");
  const transcript = $("transcript");
  const form = $("composer");
  const prompt = $("prompt");
  const sendButton = $("send");
  const stopButton = $("stop");
  const latestUrl = (window.BEDROCK_DEMO || {}).latestUrl || "/history/latest.json";

  let messages = []; // the conversation sent with every request: [{role, content}]
  let controller = null; // AbortController of the stream in flight

  function cookie(name) {
    const match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown() {
    transcript.scrollTop = transcript.scrollHeight;
  }

  function addTurn(role, text) {
    const hint = $("empty-hint");
    if (hint) hint.remove();
    const item = el("li", "turn " + role);
    item.append(el("div", "who", role === "user" ? "You" : familySelect.value));
    const body = el("div", "bubble", text);
    item.append(body);
    const meta = el("div", "meta");
    item.append(meta);
    transcript.append(item);
    scrollDown();
    return { item, body, meta };
  }

  function ms(value) {
    if (value === null || value === undefined) return "—";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
  }

  function setStreaming(on) {
    sendButton.disabled = on;
    stopButton.disabled = !on;
    familySelect.disabled = on;
    form.classList.toggle("busy", on);
  }

  function showModel() {
    const option = familySelect.selectedOptions[0];
    modelId.textContent = option ? option.dataset.model : "";
  }

  // The newest completion of this user/session, once the server has settled it.
  async function fetchLatest() {
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        const response = await fetch(latestUrl, { headers: { Accept: "application/json" } });
        if (response.ok) {
          const row = await response.json();
          if (row.status !== "streaming") return row;
        }
      } catch (err) {
        return null;
      }
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    return null;
  }

  function renderMeta(meta, timing, row, outcome) {
    const parts = [];
    if (row) {
      parts.push(["model", row.model_id]);
      parts.push(["tokens", `${row.input_tokens ?? "?"} in · ${row.output_tokens ?? "?"} out`]);
      parts.push(["first token", ms(row.time_to_first_token_ms) + " server"]);
    }
    parts.push(["first byte", ms(timing.firstByte) + " browser"]);
    parts.push(["total", ms(timing.total)]);
    if (row && row.output_tokens && timing.firstByte !== null && timing.total > timing.firstByte) {
      parts.push(["speed", (row.output_tokens / ((timing.total - timing.firstByte) / 1000)).toFixed(1) + " tok/s"]);
    }
    const status = row ? row.status : outcome;
    meta.replaceChildren();
    meta.append(el("span", "badge " + status, status + (row && row.stop_reason ? " · " + row.stop_reason : "")));
    for (const [label, value] of parts) {
      const item = el("span", "stat");
      item.append(el("span", "label", label), el("span", "value", value));
      meta.append(item);
    }
  }

  function showError(turn, error) {
    turn.item.classList.add("failed");
    const box = el("div", "notice error");
    box.append(el("strong", "", (error.type || "error") + (error.code ? ` (${error.code})` : "") + ": "));
    box.append(document.createTextNode(error.message || "Something went wrong."));
    turn.meta.before(box);
  }

  async function send(text) {
    const family = familySelect.value;
    const path = familySelect.selectedOptions[0].dataset.path;
    messages.push({ role: "user", content: text });
    addTurn("user", text);
    const turn = addTurn("assistant", "");
    turn.item.classList.add("streaming");
    setStreaming(true);
    controller = new AbortController();

    const started = performance.now();
    const timing = { firstByte: null, total: null };
    let answer = "";
    let outcome = "completed";
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": cookie("csrftoken") },
        body: JSON.stringify({ messages }),
        signal: controller.signal,
      });
      if (!response.ok) {
        let error = { type: "http_" + response.status, message: response.statusText };
        try {
          error = (await response.json()).error || error;
        } catch (err) {
          /* not JSON: keep the status line */
        }
        if (response.status === 429 && response.headers.get("Retry-After")) {
          error.message += ` Retry after ${response.headers.get("Retry-After")} s.`;
        }
        messages.pop(); // the request never reached the model: let the user send it again
        prompt.value = prompt.value || text;
        turn.item.classList.remove("streaming");
        turn.body.remove();
        showError(turn, error);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const chunk = decoder.decode(value, { stream: true });
        if (!chunk) continue;
        if (timing.firstByte === null) timing.firstByte = performance.now() - started;
        answer += chunk;
        turn.body.textContent = answer;
        scrollDown();
      }
      answer += decoder.decode();
      turn.body.textContent = answer;
    } catch (err) {
      if (err.name === "AbortError") {
        outcome = "cancelled";
      } else {
        outcome = "failed";
        showError(turn, { type: "network_error", message: String(err.message || err) });
      }
    } finally {
      timing.total = performance.now() - started;
      controller = null;
      setStreaming(false);
      turn.item.classList.remove("streaming");
    }
    if (answer) messages.push({ role: "assistant", content: answer });
    else if (outcome !== "completed") messages.pop();
    if (!answer && outcome === "completed") turn.body.textContent = "(empty answer)";

    const row = await fetchLatest();
    renderMeta(turn.meta, timing, row, outcome);
    if (row && row.status === "failed") {
      // The text protocol cannot carry an error: the body just ends. The stored row says why.
      showError(turn, { type: row.error_code || "failed", message: row.error || "The stream failed." });
    }
    scrollDown();
    prompt.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    prompt.value = "";
    send(text);
  });

  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  stopButton.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  $("new-chat").addEventListener("click", () => {
    if (controller) controller.abort();
    messages = [];
    transcript.replaceChildren(el("li", "empty", "New conversation. Ask anything."));
    transcript.firstChild.id = "empty-hint";
    prompt.focus();
  });

  const saved = localStorage.getItem("bedrock-demo-family");
  if (saved && [...familySelect.options].some((o) => o.value === saved)) familySelect.value = saved;
  familySelect.addEventListener("change", () => {
    localStorage.setItem("bedrock-demo-family", familySelect.value);
    showModel();
  });
  showModel();
  prompt.focus();
})();
