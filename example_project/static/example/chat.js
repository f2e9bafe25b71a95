// The chat page. It renders the AI SDK UI message stream (server-sent events of JSON chunks) as it
// arrives: reasoning in a "Thinking" section, the answer with numbered citation markers, tool calls,
// the sources, files and the usage. Plain JavaScript, no build step. Two modes:
//
// Saved chats (the default): the server keeps the history. A turn POSTs only the new message,
// {id, message}, to the example's ChatStreamView of the chosen family (/demo/chat/<family>/); the
// sidebar lists, opens, renames and deletes chats with the package's endpoints (/bedrock/chats/,
// /bedrock/chat/<id>/). The open chat is in the URL (?chat=<id>). On load the page asks
// /bedrock/chat/<id>/stream/ for an answer still running (useChat's `resume: true`): 204 is none, 200
// replays it from its start and follows it live. Stop POSTs /bedrock/chat/<id>/stop/: the answer ends
// with an `abort` chunk and is stored as cancelled.
//
// One-off: the page keeps the history and POSTs the whole conversation, in the AI SDK's message shape
// ({role, parts}), to /bedrock/<family>/?protocol=ui (or the example's converse-tools endpoint).
//
// Tools, as the AI SDK's useChat does them: the server runs its own tools and continues the same
// stream with the model's next turn; a call to a tool the browser runs (local_time) or one waiting for
// the user's approval ends the stream. The page then runs the tool, or shows Approve / Deny, and posts
// the conversation again with the tool part answered (state output-available / approval-responded);
// the model's next turn streams into the same assistant message.
//
// Everything the user or the model wrote is inserted as text (textContent / text nodes), never as HTML;
// links are made only from http(s) URLs.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("demo-config").textContent);
  const limits = config.limits;
  const familySelect = $("family");
  const modelId = $("model-id");
  const transcript = $("transcript");
  const form = $("composer");
  const prompt = $("prompt");
  const sendButton = $("send");
  const stopButton = $("stop");
  const attachInput = $("attach");
  const attachLabel = $("attach-label");
  const pendingList = $("pending");
  const status = $("composer-status");
  const modeSelect = $("mode");
  const chatList = $("chat-list");
  const layout = $("chat-layout");
  const api = config.chatApi; // the package's chat endpoints: chats/, chat/<id>/, chat/<id>/stream/, chat/<id>/stop/

  let history = []; // the conversation sent with every request: AI SDK UIMessages {role, parts}
  let pending = []; // files for the next message: {name, mediaType, kind, size, url}
  let controller = null; // AbortController of the stream in flight
  let turns = 0; // numbers the assistant turns, for element ids
  let assistantTurns = []; // the assistant messages shown, oldest first
  let current = null; // the assistant turn streaming now
  let chatId = null; // the open saved chat (null: a new one, or the one-off mode)
  let stopTimer = null; // ends the local fetch if a stop request did not end the stream
  let opening = 0; // counts chats opened (and new ones started): a slower load gives way to a later one
  let editing = false; // a chat is being renamed or deleted in the sidebar: the list is not redrawn under it

  // The tools this page runs itself, by name: the endpoint declares them without an `execute`, so the
  // model's call ends the stream and the page answers it. The output matches the tool's output_schema.
  const browserTools = {
    local_time() {
      const now = new Date();
      return {
        localTime: now.toString(),
        timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone || "unknown",
        utcOffsetMinutes: -now.getTimezoneOffset(),
      };
    },
  };
  // Tool part states with an answer the model can read (or, approval-responded, one the server acts on).
  const ANSWERED = new Set(["output-available", "output-error", "output-denied", "approval-responded"]);

  // -- small helpers --------------------------------------------------------------------------------

  function cookie(name) {
    const match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function jsonHeaders() {
    return { "Content-Type": "application/json", "X-CSRFToken": cookie("csrftoken") };
  }

  // A chat id as useChat makes them: 16 letters and digits.
  function newChatId() {
    const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    return [...crypto.getRandomValues(new Uint8Array(16))].map((byte) => letters[byte % letters.length]).join("");
  }

  function ms(value) {
    if (value === null || value === undefined) return "—";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
  }

  function megabytes(bytes) {
    return bytes >= 1024 * 1024 ? (bytes / 1048576).toFixed(2) + " MB" : Math.max(1, Math.round(bytes / 1024)) + " KB";
  }

  // An http(s) URL as an absolute href, or null (javascript:, data: and the like never become links).
  function safeHref(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (err) {
      return null;
    }
  }

  function scrollDown() {
    transcript.scrollTop = transcript.scrollHeight;
  }

  function say(message, isError) {
    status.textContent = message || "";
    status.classList.toggle("error", Boolean(message && isError));
  }

  function accepted() {
    return config.accept[familySelect.value] || {};
  }

  function fileFamilies() {
    return Object.keys(config.accept).filter((name) => Object.keys(config.accept[name]).length);
  }

  // -- the UI message stream --------------------------------------------------------------------------

  // The JSON chunks of an AI SDK UI message stream (SSE: "data: {...}" events, ": ping" comments, and
  // "data: [DONE]" at the end), yielded as they arrive.
  async function* uiChunks(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
      if (done) return;
    }
  }

  // -- rendering turns ------------------------------------------------------------------------------

  function clearHint() {
    const hint = $("empty-hint");
    if (hint) hint.remove();
  }

  function typeIcon(file) {
    const ext = file.name.includes(".") ? file.name.split(".").pop().slice(0, 4) : "file";
    return el("span", "doc-icon", ext.toUpperCase());
  }

  function fileTile(file) {
    const item = el("li", "file " + file.kind);
    if (file.kind === "image") {
      const image = el("img");
      image.alt = "";
      image.addEventListener("error", () => image.replaceWith(typeIcon(file))); // not an image after all
      image.src = file.url; // a data:image/... URL of the user's own file
      item.append(image);
    } else {
      item.append(typeIcon(file));
    }
    const caption = el("span", "file-name", file.name);
    caption.title = file.name;
    item.append(caption, el("span", "file-size", megabytes(file.size)));
    return item;
  }

  function addUserTurn(text, files) {
    clearHint();
    const item = el("li", "turn user");
    item.append(el("div", "who", "You"));
    if (files.length) {
      const list = el("ul", "attachments sent");
      list.setAttribute("aria-label", "Attached files");
      files.forEach((file) => list.append(fileTile(file)));
      item.append(list);
    }
    if (text) item.append(el("div", "bubble", text));
    transcript.append(item);
    scrollDown();
    return item;
  }

  // One assistant message: its elements, the UIMessage parts rebuilt from the stream (kept to send back
  // with the next turn) and what the stream said about it.
  //
  // An assistant message may take several model turns (steps) and several requests (after the page
  // answered a tool call): its flow holds, in order, each step's Thinking section, text bubble and tool
  // calls; the sources and the usage follow.
  function addAssistantTurn(family, path, question) {
    clearHint();
    const n = ++turns;
    const item = el("li", "turn assistant streaming");
    item.setAttribute("aria-busy", "true");
    const flow = el("div", "flow");
    const body = el("div", "bubble");
    flow.append(body);
    const meta = el("div", "meta");
    item.append(el("div", "who", family), flow, meta);
    transcript.append(item);
    scrollDown();
    const turn = {
      n,
      family, // the endpoint, and its URL: the message continues there
      path,
      question, // the user's turn it answers
      item,
      flow,
      body, // the current step's text bubble (null after a tool call, until text comes)
      meta,
      parts: [], // the UIMessage parts, as the AI SDK builds them from the stream
      message: null, // this message in `history`, once it has something to keep
      calls: new Map(), // toolCallId -> {part, card, ...}: the tool calls shown
      steps: 0, // start-step chunks seen
      open: new Map(), // chunk id -> {part, node}
      thinking: null, // the Thinking section, made when reasoning arrives
      sources: new Map(), // sourceId -> number
      sourceList: null,
      metadata: null,
      error: null,
      refused: false,
      chatId: mode() === "chat" ? chatId : null, // the saved chat it belongs to
      messageId: null, // its id on the server (the start chunk's messageId), to continue it after tools
      aborted: false, // the stream ended with an abort chunk (a stop)
      stored: false, // rendered from the chat's stored messages, not streamed here
      started: performance.now(),
      firstToken: null,
      streaming: true,
    };
    assistantTurns.push(turn);
    return turn;
  }

  function thinkingSection(turn) {
    if (turn.thinking) return turn.thinking;
    const section = el("div", "thinking");
    const toggle = el("button", "thinking-toggle");
    toggle.type = "button";
    const label = el("span", "thinking-label", "Thinking…");
    toggle.append(el("span", "chevron"), label);
    const panel = el("div", "thinking-body");
    panel.id = `thinking-${turn.n}`;
    toggle.setAttribute("aria-controls", panel.id);
    section.append(toggle, panel);
    if (turn.body) turn.body.before(section);
    else turn.flow.append(section);
    const thinking = { section, toggle, label, panel, touched: false, started: performance.now(), ended: null };
    setExpanded(thinking, true);
    toggle.addEventListener("click", () => {
      thinking.touched = true;
      setExpanded(thinking, toggle.getAttribute("aria-expanded") !== "true");
    });
    section.classList.add("live");
    turn.thinking = thinking;
    return thinking;
  }

  function setExpanded(thinking, open) {
    thinking.toggle.setAttribute("aria-expanded", String(open));
    thinking.panel.hidden = !open;
  }

  // The reasoning is over (the answer started, or the stream ended): say for how long, and fold it
  // away unless the user opened or closed it themselves.
  function endThinking(turn, fold) {
    const thinking = turn.thinking;
    if (!thinking || thinking.ended !== null) return;
    thinking.ended = performance.now();
    thinking.section.classList.remove("live");
    const visible = turn.parts.some((part) => part.type === "reasoning" && part.text);
    const took = turn.stored ? "Reasoning" : `Thought for ${ms(thinking.ended - thinking.started)}`;
    thinking.label.textContent = visible ? took : "Reasoning (encrypted)";
    if (fold && !thinking.touched) setExpanded(thinking, false);
  }

  // The current step's text bubble, made when text follows a tool call.
  function bodyOf(turn) {
    if (!turn.body) {
      turn.body = el("div", "bubble");
      turn.flow.append(turn.body);
    }
    return turn.body;
  }

  function appendText(turn, text) {
    const body = bodyOf(turn);
    const last = body.lastChild;
    if (last && last.nodeType === Node.TEXT_NODE) last.appendData(text);
    else body.append(document.createTextNode(text));
  }

  // A step after one that called tools: its reasoning gets a Thinking section of its own, and a fresh
  // bubble (with the cursor) waits for its text under the tool calls.
  function nextStep(turn) {
    endThinking(turn, true);
    turn.thinking = null;
    bodyOf(turn);
  }

  function sourceSection(turn) {
    if (turn.sourceList) return turn.sourceList;
    const section = el("section", "sources");
    const heading = el("h3", "sources-heading", "Sources");
    heading.id = `sources-${turn.n}`;
    section.setAttribute("aria-labelledby", heading.id);
    turn.sourceList = el("ol", "source-list");
    section.append(heading, turn.sourceList);
    turn.meta.before(section);
    return turn.sourceList;
  }

  // A citation: a numbered marker where it arrives in the text, and its source in the list (a source
  // cited again keeps its number).
  function addSource(turn, chunk) {
    let number = turn.sources.get(chunk.sourceId);
    const anchor = `m${turn.n}-source-`;
    if (number === undefined) {
      number = turn.sources.size + 1;
      turn.sources.set(chunk.sourceId, number);
      const bedrock = (chunk.providerMetadata && chunk.providerMetadata.bedrock) || {};
      const href = chunk.url ? safeHref(chunk.url) : null;
      const title = chunk.title || chunk.url || `Source ${number}`;
      const item = el("li", "source");
      item.id = anchor + number;
      item.append(el("span", "source-number", `[${number}]`));
      const main = el("div", "source-main");
      if (href) {
        const link = el("a", "source-title", title);
        link.href = href;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        main.append(link);
      } else {
        main.append(el("span", "source-title", title));
      }
      if (bedrock.citedText) main.append(el("blockquote", "cited", bedrock.citedText));
      if (chunk.url) main.append(el("span", "source-url", chunk.url));
      item.append(main);
      sourceSection(turn).append(item);
    }
    const marker = el("sup", "cite");
    const link = el("a", "", `[${number}]`);
    link.href = "#" + anchor + number;
    link.setAttribute("aria-label", `source ${number}`);
    marker.append(link);
    bodyOf(turn).append(marker);
  }

  // A file the model made: an image is shown, anything else offered as a download.
  function addModelFile(turn, chunk) {
    let list = turn.item.querySelector(".model-files");
    if (!list) {
      list = el("ul", "attachments model-files");
      list.setAttribute("aria-label", "Files from the model");
      bodyOf(turn).after(list);
    }
    const item = el("li", "file");
    if (/^image\//.test(chunk.mediaType) && /^data:image\//.test(chunk.url)) {
      const image = el("img");
      image.src = chunk.url;
      image.alt = "An image from the model";
      item.append(image);
    } else {
      const link = el("a", "", `Download (${chunk.mediaType})`);
      link.href = chunk.url;
      link.download = "file";
      item.append(link);
    }
    list.append(item);
  }

  // -- tool calls ------------------------------------------------------------------------------------

  function isToolPart(part) {
    return part.type.startsWith("tool-") || part.type === "dynamic-tool";
  }

  function toolNameOf(part) {
    return part.type === "dynamic-tool" ? part.toolName : part.type.slice("tool-".length);
  }

  // What the endpoint said about a tool: {runs: "server" | "browser", approval}, or {} when unknown.
  function toolInfo(turn, name) {
    return (config.tools[turn.family] || []).find((info) => info.name === name) || {};
  }

  function pretty(value) {
    if (value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  // A call's card: its name, where it runs, its status, the input as it streams (pretty JSON once
  // complete), the result or the error, and Approve / Deny while it waits for the user.
  function toolCard(turn, part) {
    const name = toolNameOf(part);
    const info = toolInfo(turn, name);
    const card = el("section", "tool");
    card.dataset.toolCallId = part.toolCallId;
    const head = el("div", "tool-head");
    const title = el("span", "tool-name", name);
    title.id = `tool-${turn.n}-${turn.calls.size + 1}`;
    card.setAttribute("aria-labelledby", title.id);
    head.append(el("span", "tool-icon", "ƒ"), title);
    if (info.runs) {
      const where = info.runs === "browser" ? "runs in your browser" : "runs on the server";
      head.append(el("span", "tool-where", where + (info.approval ? " · asks you first" : "")));
    }
    const state = el("span", "tool-status");
    state.setAttribute("role", "status");
    head.append(state);
    const input = el("pre", "tool-input");
    const inputBox = el("div", "tool-field");
    inputBox.append(el("span", "tool-label", "Input"), input);
    const result = el("pre", "tool-output");
    const resultBox = el("div", "tool-field tool-result");
    resultBox.append(el("span", "tool-label", "Result"), result);
    resultBox.hidden = true;
    const actions = el("div", "tool-actions");
    actions.hidden = true;
    card.append(head, inputBox, resultBox, actions);
    // answered: the page answered it since the last request; unanswered: the part as it was before.
    return { part, name, card, state, input, result, resultBox, actions, inputText: "", answered: false, unanswered: null, note: "" };
  }

  // The card of a call, made the first time the stream mentions it (tool-input-start, or a whole call).
  function callOf(turn, chunk) {
    let call = turn.calls.get(chunk.toolCallId);
    if (call) return call;
    const part = { type: `tool-${chunk.toolName}`, toolCallId: chunk.toolCallId, state: "input-streaming" };
    turn.parts.push(part);
    call = toolCard(turn, part);
    turn.calls.set(part.toolCallId, call);
    // The step's text so far stays above the call; text after it goes into a new bubble below.
    endThinking(turn, true);
    if (turn.body && !turn.body.childNodes.length) turn.body.remove();
    turn.body = null;
    turn.flow.append(call.card);
    return call;
  }

  const STATUS = {
    "input-streaming": ["Writing the input…", "busy"],
    "approval-requested": ["Waiting for your approval", "wait"],
    "output-available": ["Done", "ok"],
    "output-error": ["Error", "bad"],
    "output-denied": ["Denied", "bad"],
  };

  function renderCall(turn, call) {
    const part = call.part;
    let [text, tone] = STATUS[part.state] || ["", "busy"];
    if (part.state === "input-available") {
      const where = toolInfo(turn, call.name).runs === "browser" ? "in your browser" : "on the server";
      [text, tone] = turn.streaming ? [`Running ${where}…`, "busy"] : ["Not run", "idle"];
    } else if (part.state === "approval-responded") {
      [text, tone] = part.approval.approved ? ["Approved · running…", "busy"] : ["Denied · telling the model…", "busy"];
    }
    if (call.note) [text, tone] = [call.note, "idle"];
    call.state.textContent = text;
    call.card.dataset.state = part.state;
    call.card.dataset.tone = tone;

    if (part.state !== "input-streaming") call.input.textContent = pretty(part.input);
    const failed = part.state === "output-error" || part.state === "output-denied";
    call.resultBox.hidden = !(part.state === "output-available" || failed);
    call.resultBox.classList.toggle("error", failed);
    if (part.state === "output-available") call.result.textContent = pretty(part.output);
    else if (part.state === "output-error") call.result.textContent = part.errorText || "The tool failed.";
    else if (part.state === "output-denied") call.result.textContent = "You denied this call; the model was told.";
    call.resultBox.querySelector(".tool-label").textContent = failed ? (part.state === "output-denied" ? "Outcome" : "Error") : "Result";

    const asking = part.state === "approval-requested" && !call.note;
    if (asking && !call.actions.childElementCount) {
      const approve = el("button", "approve", "Approve");
      const deny = el("button", "deny", "Deny");
      approve.type = deny.type = "button";
      approve.addEventListener("click", () => answerApproval(turn, call, true));
      deny.addEventListener("click", () => answerApproval(turn, call, false));
      call.actions.append(approve, deny);
    }
    call.actions.hidden = !asking;
  }

  function onToolChunk(turn, chunk) {
    const kind = chunk.type;
    if (!turn.calls.has(chunk.toolCallId) && !chunk.toolName) return; // an outcome for a call never shown
    const call = callOf(turn, chunk);
    const part = call.part;
    if (kind === "tool-input-delta") {
      call.inputText += chunk.inputTextDelta;
      call.input.append(document.createTextNode(chunk.inputTextDelta)); // as it streams: not JSON yet
    } else if (kind === "tool-input-available") {
      part.state = "input-available";
      part.input = chunk.input;
      // The signature the server gave the call: it checks it when the conversation comes back.
      if (chunk.providerMetadata) part.callProviderMetadata = chunk.providerMetadata;
    } else if (kind === "tool-input-error") {
      part.state = "output-error";
      part.input = chunk.input;
      part.errorText = chunk.errorText;
    } else if (kind === "tool-approval-request") {
      part.state = "approval-requested";
      part.approval = { id: chunk.approvalId };
    } else if (kind === "tool-output-available") {
      part.state = "output-available";
      part.output = chunk.output;
    } else if (kind === "tool-output-error") {
      part.state = "output-error";
      part.errorText = chunk.errorText;
    } else if (kind === "tool-output-denied") {
      part.state = "output-denied";
    }
    renderCall(turn, call);
  }

  // The tool calls of the message's last step (after its last step-start part).
  function lastStepCalls(turn) {
    const start = turn.parts.map((part) => part.type).lastIndexOf("step-start");
    return turn.parts.slice(start + 1).filter(isToolPart).map((part) => turn.calls.get(part.toolCallId));
  }

  // After a stream that ended with calls for the browser: run the page's own tools, then go on if
  // nothing waits for the user (as useChat's sendAutomaticallyWhen: lastAssistantMessageIsComplete...).
  async function afterStream(turn, outcome) {
    if (outcome !== "completed") return;
    for (const call of lastStepCalls(turn)) {
      const run = browserTools[call.name];
      if (call.part.state !== "input-available" || !run || toolInfo(turn, call.name).runs !== "browser") continue;
      call.unanswered = { ...call.part };
      try {
        call.part.output = await run(call.part.input || {});
        call.part.state = "output-available";
      } catch (err) {
        call.part.errorText = String((err && err.message) || err);
        call.part.state = "output-error";
      }
      call.answered = true;
      renderCall(turn, call);
    }
    continueIfAnswered(turn);
  }

  function answerApproval(turn, call, approved) {
    if (controller || call.part.state !== "approval-requested") return;
    call.unanswered = { ...call.part };
    call.part.state = "approval-responded";
    call.part.approval = { id: call.part.approval.id, approved };
    call.answered = true;
    renderCall(turn, call); // the buttons go away: keep the keyboard in the composer
    prompt.focus();
    continueIfAnswered(turn);
  }

  function continueIfAnswered(turn) {
    const calls = lastStepCalls(turn);
    if (calls.some((call) => call.answered) && calls.every((call) => ANSWERED.has(call.part.state))) {
      resume(turn, calls.filter((call) => call.answered));
    }
  }

  // Calls left waiting when the user writes something else: the server leaves them out.
  function abandonCalls() {
    for (const turn of assistantTurns) {
      for (const call of turn.calls.values()) {
        if (call.part.state === "approval-requested" && !call.note) {
          call.note = "Not answered";
          renderCall(turn, call);
          stopWaiting(turn);
        }
      }
    }
  }

  // The message no longer waits for the user (the answer was refused, or they wrote something else).
  function stopWaiting(turn) {
    if (turn.outcome === "waiting") renderMeta(turn, (turn.outcome = "completed"), turn.total);
  }

  function onChunk(turn, chunk) {
    const kind = chunk.type;
    if (kind === "reasoning-start") {
      const part = { type: "reasoning", text: "" };
      turn.parts.push(part);
      const node = el("p", "reasoning-block");
      thinkingSection(turn).panel.append(node);
      turn.open.set(chunk.id, { part, node });
    } else if (kind === "reasoning-delta") {
      const block = turn.open.get(chunk.id);
      if (!block) return;
      if (turn.firstToken === null) turn.firstToken = performance.now() - turn.started;
      block.part.text += chunk.delta;
      block.node.append(document.createTextNode(chunk.delta));
      if (chunk.providerMetadata) {
        block.part.providerMetadata = chunk.providerMetadata; // the signature, sent back next turn
        const bedrock = chunk.providerMetadata.bedrock || {};
        if (bedrock.redactedData) {
          block.node.classList.add("redacted");
          block.node.textContent = "Part of the reasoning is encrypted by the provider; it is sent back as is.";
        }
      }
    } else if (kind === "text-start") {
      const part = { type: "text", text: "" };
      turn.parts.push(part);
      turn.open.set(chunk.id, { part });
    } else if (kind === "text-delta") {
      const block = turn.open.get(chunk.id);
      if (!block) return;
      if (turn.firstToken === null) turn.firstToken = performance.now() - turn.started;
      block.part.text += chunk.delta;
      appendText(turn, chunk.delta);
      if (chunk.delta) endThinking(turn, true);
    } else if (kind === "reasoning-end" || kind === "text-end") {
      turn.open.delete(chunk.id);
    } else if (kind === "source-url" || kind === "source-document") {
      addSource(turn, chunk);
    } else if (kind === "file") {
      addModelFile(turn, chunk);
    } else if (kind === "start-step") {
      turn.parts.push({ type: "step-start" });
      if (turn.steps++ > 0) nextStep(turn);
    } else if (kind.startsWith("tool-")) {
      onToolChunk(turn, chunk);
    } else if (kind === "message-metadata" || kind === "finish") {
      if (chunk.messageMetadata) turn.metadata = Object.assign(turn.metadata || {}, chunk.messageMetadata);
    } else if (kind === "error") {
      turn.error = chunk.errorText || "The stream failed.";
    } else if (kind === "abort") {
      turn.aborted = true; // stopped: the stream ends here, with no finish chunk
    } else if (kind === "start" && chunk.messageId && !turn.messageId) {
      turn.messageId = chunk.messageId; // (a continuation after tools keeps the message's first id)
    }
    // finish-step and any newer chunk type need nothing here.
  }

  // Usage under the answer, from the finish chunk's messageMetadata, plus the browser's own timings.
  function renderMeta(turn, outcome, total) {
    const metadata = turn.metadata || {};
    const usage = metadata.usage || {};
    const meta = turn.meta;
    meta.replaceChildren();
    const badge = outcome + (metadata.finishReason ? " · " + metadata.finishReason : "");
    meta.append(el("span", "badge " + outcome, badge));

    function stat(label, pieces, className) {
      const item = el("span", "stat" + (className ? " " + className : ""));
      item.append(el("span", "label", label));
      for (const [name, value, unit] of pieces) {
        const number = el("span", "value", value === undefined || value === null ? "?" : String(value));
        number.dataset.stat = name;
        item.append(number);
        if (unit) item.append(document.createTextNode(" " + unit + " "));
      }
      meta.append(item);
    }

    if (metadata.modelId) stat("model", [["model", metadata.modelId]]);
    if (turn.metadata) {
      stat("tokens", [["input", usage.inputTokens, "in ·"], ["output", usage.outputTokens, "out"]]);
      const hit = usage.cacheReadTokens > 0;
      stat("cache", [["cache-read", usage.cacheReadTokens, "read ·"], ["cache-write", usage.cacheWriteTokens, "written"]],
        hit ? "cache hit" : "cache");
    }
    if (metadata.latencyMs !== undefined) stat("Bedrock latency", [["latency", ms(metadata.latencyMs)]]);
    if (turn.stored) return; // the browser's own timings were not taken for a stored message
    stat("first token", [["first-token", ms(turn.firstToken)]]);
    stat("total", [["total", ms(total)]]);
    if (usage.outputTokens && turn.firstToken !== null && total > turn.firstToken) {
      stat("speed", [["speed", (usage.outputTokens / ((total - turn.firstToken) / 1000)).toFixed(1), "tok/s"]]);
    }
  }

  function showError(turn, error) {
    turn.item.classList.add("failed");
    const box = el("div", "notice error");
    box.setAttribute("role", "alert");
    box.append(el("strong", "", (error.type || "error") + (error.code ? ` (${error.code})` : "") + ": "));
    box.append(document.createTextNode(error.message || "Something went wrong."));
    turn.meta.before(box);
  }

  // -- attachments ----------------------------------------------------------------------------------

  function countFiles(messages) {
    const counts = { image: 0, document: 0 };
    for (const message of messages) {
      for (const part of message.parts || []) {
        if (part.type === "file") counts[part.mediaType.startsWith("image/") ? "image" : "document"] += 1;
      }
    }
    return counts;
  }

  function readDataUrl(file, mediaType) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(`data:${mediaType};base64,` + String(reader.result).split(",", 2)[1]);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  // Checks the files as the server will (type, size, count) and queues those that pass; the rest are
  // named in the status line. The server checks everything again, by content.
  async function addFiles(files) {
    const family = familySelect.value;
    const accept = accepted();
    const problems = [];
    const counts = countFiles(history);
    pending.forEach((file) => (counts[file.kind] += 1));
    for (const file of files) {
      if (!Object.keys(accept).length) {
        problems.push(`${family} takes text only; choose ${fileFamilies().join(", ")} to send files.`);
        break;
      }
      const ext = "." + (file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "");
      const mediaType = accept[ext] || (Object.values(accept).includes(file.type) ? file.type : null);
      if (!mediaType) {
        problems.push(`${file.name}: ${family} does not take this kind of file (it takes ${Object.keys(accept).join(" ")}).`);
        continue;
      }
      const kind = mediaType.startsWith("image/") ? "image" : "document";
      const limit = kind === "image" ? limits.maxImageBytes : limits.maxDocumentBytes;
      const most = kind === "image" ? limits.maxImages : limits.maxDocuments;
      if (file.size === 0) {
        problems.push(`${file.name} is empty.`);
      } else if (file.size > limit) {
        problems.push(`${file.name} is ${megabytes(file.size)}; ${kind}s may be at most ${megabytes(limit)}.`);
      } else if (counts[kind] + 1 > most) {
        problems.push(`${file.name}: at most ${most} ${kind}s per conversation (files are sent again with every turn).`);
      } else {
        counts[kind] += 1;
        try {
          pending.push({ name: file.name, mediaType, kind, size: file.size, url: await readDataUrl(file, mediaType) });
        } catch (err) {
          counts[kind] -= 1;
          problems.push(`${file.name} could not be read.`);
        }
      }
    }
    renderPending();
    say(problems.join(" "), problems.length > 0);
  }

  function renderPending() {
    pendingList.replaceChildren();
    pending.forEach((file, index) => {
      const tile = fileTile(file);
      const remove = el("button", "remove", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.addEventListener("click", () => {
        pending.splice(index, 1);
        renderPending();
        prompt.focus();
      });
      tile.append(remove);
      pendingList.append(tile);
    });
  }

  function showFamily() {
    const option = familySelect.selectedOptions[0];
    modelId.textContent = option ? option.dataset.model : "";
    const accept = accepted();
    const types = Object.keys(accept);
    attachInput.disabled = types.length === 0;
    attachInput.accept = [...types, ...new Set(Object.values(accept))].join(",");
    attachLabel.classList.toggle("disabled", types.length === 0);
    attachLabel.title = types.length
      ? "Attach " + types.join(" ")
      : `${familySelect.value} takes text only (files: ${fileFamilies().join(", ")})`;
  }

  // -- a turn ---------------------------------------------------------------------------------------

  function problemBeforeSending(text, files) {
    if (!text && !files.length) return "Type a message or attach a file.";
    const accept = accepted();
    const types = new Set(Object.values(accept));
    const family = familySelect.value;
    if (files.some((file) => !types.has(file.mediaType))) {
      return `${family} does not take some of the attached files; remove them or choose ${fileFamilies().join(", ")}.`;
    }
    const earlier = countFiles(history);
    if ((earlier.image || earlier.document) && !Object.keys(accept).length) {
      return `This conversation has files and ${family} takes text only: start a new chat or choose ${fileFamilies().join(", ")}.`;
    }
    if (files.some((file) => file.kind === "document") && !text) {
      return "Add a question about the document: Bedrock needs text next to a document.";
    }
    return null;
  }

  // The request body, or null (said why) when the server would refuse its size: in a saved chat the new
  // message only ({id, message}; the server has the rest), else the whole conversation with the system
  // prompt first.
  function requestBody(turnChat, message, conversation) {
    const payload = turnChat
      ? { id: turnChat, message }
      : { messages: [{ role: "system", content: config.system }, ...conversation] };
    const body = JSON.stringify(payload);
    const size = new Blob([body]).size;
    if (size <= limits.maxBodyBytes) return body;
    say(`This ${turnChat ? "message" : "conversation"} with its files is ${megabytes(size)}; the server takes ` +
      `requests of up to ${megabytes(limits.maxBodyBytes)}. Remove files or start a new chat.`, true);
    return null;
  }

  function endpointPath() {
    const option = familySelect.selectedOptions[0];
    return mode() === "chat" ? option.dataset.chatPath : option.dataset.path;
  }

  async function send(text, files) {
    const family = familySelect.value;
    const path = endpointPath();
    const parts = files.map((file) => ({ type: "file", mediaType: file.mediaType, filename: file.name, url: file.url }));
    if (text) parts.push({ type: "text", text });
    const message = { role: "user", parts };
    if (mode() === "chat" && !chatId) chatId = newChatId(); // the chat is made on the server with its first answer
    const body = requestBody(mode() === "chat" ? chatId : null, message, [...history, message]);
    if (body === null) return;
    abandonCalls();
    prompt.value = "";
    pending = [];
    renderPending();
    say("");
    history.push(message);
    const turn = addAssistantTurn(family, path, addUserTurn(text, files));
    prompt.focus();
    await stream(turn, body, (error) => {
      // The request never reached the model: give the message back to the user to fix and resend.
      history.pop();
      setAside(turn, "not sent");
      prompt.value = prompt.value || text;
      if (!pending.length) {
        pending = files;
        renderPending();
      }
      turn.body.remove();
      turn.body = null;
      showError(turn, error);
    });
  }

  // The conversation again, with the tool calls the page just answered: the model's next turn streams
  // into the same message (in a saved chat: that message, by its id, with the answers in its parts).
  async function resume(turn, answered) {
    answered.forEach((call) => (call.answered = false));
    const message = { id: turn.messageId, role: "assistant", parts: turn.message ? turn.message.parts : turn.parts };
    const body = requestBody(turn.chatId, message, history);
    if (body === null) return;
    turn.item.classList.add("streaming");
    turn.item.setAttribute("aria-busy", "true");
    bodyOf(turn);
    await stream(turn, body, (error) => {
      // Refused (say, an approval answered after it expired): the calls go back to unanswered, which
      // the server leaves out of the conversation, so the chat goes on.
      for (const call of answered) {
        for (const key of Object.keys(call.part)) delete call.part[key];
        Object.assign(call.part, call.unanswered);
        call.note = "Not sent: the server refused the answer";
        renderCall(turn, call);
      }
      stopWaiting(turn);
      showError(turn, error);
    });
  }

  async function errorOf(response) {
    let error = { type: "http_" + response.status, message: response.statusText };
    try {
      error = (await response.json()).error || error;
    } catch (err) {
      /* not JSON: keep the status line */
    }
    if (response.status === 429 && response.headers.get("Retry-After")) {
      error.message += ` Retry after ${response.headers.get("Retry-After")} s.`;
    }
    return error;
  }

  // One stream into `turn`: the answer to a request (`source`: its body; `refused(error)` handles an
  // answer that is not a stream), or a running answer picked up again (`source`: {chunks}, read with
  // `controller`, already set).
  async function stream(turn, source, refused) {
    setStreaming(true);
    if (typeof source === "string") controller = new AbortController();
    current = turn;
    turn.started = performance.now();
    turn.refused = false;
    turn.streaming = true;
    turn.aborted = false;
    let outcome = "completed";
    try {
      let chunks = source.chunks;
      if (!chunks) {
        const response = await fetch(turn.path + "?protocol=ui", {
          method: "POST",
          headers: jsonHeaders(),
          body: source,
          signal: controller.signal,
        });
        if (!response.ok) {
          outcome = "refused";
          turn.refused = true;
          refused(await errorOf(response));
          return;
        }
        if (turn.chatId) chatStarted(turn.chatId);
        chunks = uiChunks(response.body);
      }
      // A stream: what the last one said about this message (its usage, timings) makes way.
      Object.assign(turn, { firstToken: null, metadata: null, error: null });
      for await (const chunk of chunks) {
        onChunk(turn, chunk);
        scrollDown();
      }
      if (turn.aborted) {
        outcome = "cancelled";
      } else if (turn.error) {
        outcome = "failed";
        showError(turn, { type: "stream_error", message: turn.error });
      } else if (!turn.metadata) {
        outcome = "failed";
        showError(turn, { type: "network_error", message: "The stream ended before it finished." });
      }
    } catch (err) {
      if (err.name === "AbortError") {
        outcome = "cancelled";
      } else {
        outcome = "failed";
        showError(turn, { type: "network_error", message: String(err.message || err) });
      }
    } finally {
      controller = null;
      current = null;
      clearTimeout(stopTimer);
      setStreaming(false);
      finishTurn(turn, outcome);
      if (turn.chatId && !turn.refused) refreshChats(); // its place in the list (newest first)
    }
    await afterStream(turn, outcome);
  }

  function finishTurn(turn, outcome) {
    turn.streaming = false;
    turn.item.classList.remove("streaming");
    turn.item.setAttribute("aria-busy", "false");
    const said = turn.parts.some((part) => (part.type === "text" && part.text) || isToolPart(part));
    endThinking(turn, said);
    turn.calls.forEach((call) => renderCall(turn, call)); // "Running…" no more
    if (!said && outcome === "completed" && !turn.refused) bodyOf(turn).textContent = "(empty answer)";
    else if (turn.body && !turn.body.childNodes.length) {
      turn.body.remove();
      turn.body = null;
    }
    if (turn.refused) return; // no stream: the error says why
    const waiting = lastStepCalls(turn).some((call) => call.part.state === "approval-requested");
    turn.outcome = waiting && outcome === "completed" ? "waiting" : outcome;
    turn.total = performance.now() - turn.started;
    renderMeta(turn, turn.outcome, turn.total);
    if (turn.aborted) turn.meta.append(el("span", "stopped-note", "Stopped: the answer so far is kept."));
    // Keep what the model needs back on the next turn: the text, the signed (or redacted) reasoning,
    // the tool calls with their signatures and outcomes, and the step boundaries between them.
    const kept = turn.parts.filter((part) =>
      part.type === "text" ? part.text : part.type === "reasoning" ? part.providerMetadata : true);
    if (kept.some((part) => part.type !== "step-start")) {
      if (turn.message) turn.message.parts = kept;
      else history.push((turn.message = { role: "assistant", parts: kept }));
    } else if (outcome !== "completed" && !turn.message && !turn.chatId) {
      history.pop(); // nothing came back: the question is left out, to be asked again
      setAside(turn, "no answer, not kept");
    }
    scrollDown();
  }

  // A question shown in the transcript that is no longer part of the conversation sent to the model.
  function setAside(turn, why) {
    turn.question.classList.add("unsent");
    turn.question.querySelector(".who").textContent = `You · ${why}`;
  }

  function setStreaming(on) {
    sendButton.disabled = on;
    stopButton.disabled = !on;
    stopButton.hidden = !on;
    familySelect.disabled = on;
    modeSelect.disabled = on;
    form.classList.toggle("busy", on);
    transcript.setAttribute("aria-busy", String(on));
  }

  // Stop: in a saved chat, ask the server (it ends the answer wherever it runs, stores it as cancelled
  // and ends the stream with an abort chunk); the local fetch is cut only if that does not come.
  async function stop() {
    const turn = current;
    if (!controller || !turn) return;
    if (!turn.chatId) {
      controller.abort();
      return;
    }
    stopButton.disabled = true;
    const local = controller;
    stopTimer = setTimeout(() => local.abort(), 5000);
    try {
      const response = await fetch(`${api}chat/${encodeURIComponent(turn.chatId)}/stop/`, {
        method: "POST",
        headers: jsonHeaders(),
      });
      if (!response.ok || !(await response.json()).stopped) local.abort(); // nothing ran there: cut it here
    } catch (err) {
      local.abort();
    }
  }

  // -- saved chats: the sidebar, opening a chat, picking up its running answer -------------------------

  function mode() {
    return modeSelect.value;
  }

  function chatUrl(id) {
    return id ? `?chat=${encodeURIComponent(id)}` : window.location.pathname;
  }

  // The chat's first answer started: the chat exists on the server now, so it gets its URL and its
  // place in the sidebar.
  function chatStarted(id) {
    if (new URLSearchParams(window.location.search).get("chat") !== id) {
      window.history.pushState({ chat: id }, "", chatUrl(id));
    }
    refreshChats();
  }

  async function refreshChats() {
    if (mode() !== "chat") return;
    let chats;
    try {
      const response = await fetch(`${api}chats/`);
      if (!response.ok) return;
      chats = (await response.json()).chats;
    } catch (err) {
      return;
    }
    if (editing) return; // redrawn when the rename or delete is over
    chatList.replaceChildren(...chats.map(chatItem));
    if (!chats.length) chatList.append(el("li", "chat-none muted small", "No chats yet: send a message."));
  }

  function chatItem(chat) {
    const item = el("li", "chat-item");
    item.dataset.chatId = chat.id;
    const link = el("a", "chat-link", chat.title || "Untitled chat");
    link.href = chatUrl(chat.id);
    link.title = chat.title;
    if (chat.id === chatId) link.setAttribute("aria-current", "page");
    link.addEventListener("click", (event) => {
      event.preventDefault();
      if (chat.id !== chatId || !assistantTurns.length) openChat(chat.id, true);
    });
    const rename = el("button", "chat-action rename", "✎");
    rename.type = "button";
    rename.title = "Rename";
    rename.setAttribute("aria-label", `Rename ${chat.title || "chat"}`);
    rename.addEventListener("click", () => renameChat(item, chat));
    const remove = el("button", "chat-action delete", "×");
    remove.type = "button";
    remove.title = "Delete";
    remove.setAttribute("aria-label", `Delete ${chat.title || "chat"}`);
    remove.addEventListener("click", () => confirmDelete(item, chat));
    item.append(link, rename, remove);
    return item;
  }

  // Rename in place: Enter (or leaving the field) saves, Escape cancels.
  function doneEditing() {
    editing = false;
    refreshChats();
  }

  function renameChat(item, chat) {
    editing = true;
    const input = el("input", "chat-title-input");
    input.value = chat.title;
    input.maxLength = 200;
    input.setAttribute("aria-label", "Chat title");
    item.replaceChildren(input);
    input.focus();
    input.select();
    let done = false;
    async function save(keep) {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (keep && title && title !== chat.title) {
        const response = await fetch(`${api}chat/${encodeURIComponent(chat.id)}/`, {
          method: "PATCH",
          headers: jsonHeaders(),
          body: JSON.stringify({ title }),
        });
        if (!response.ok) say(`Not renamed: ${(await errorOf(response)).message}`, true);
      }
      doneEditing();
    }
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        save(true);
      } else if (event.key === "Escape") {
        save(false);
      }
    });
    input.addEventListener("blur", () => save(true));
  }

  function confirmDelete(item, chat) {
    editing = true;
    const question = el("span", "chat-confirm", `Delete “${chat.title || "Untitled chat"}”?`);
    const yes = el("button", "danger small-button confirm-delete", "Delete");
    const no = el("button", "ghost small-button", "Cancel");
    yes.type = no.type = "button";
    yes.addEventListener("click", async () => {
      const response = await fetch(`${api}chat/${encodeURIComponent(chat.id)}/`, { method: "DELETE", headers: jsonHeaders() });
      if (!response.ok && response.status !== 404) say(`Not deleted: ${(await errorOf(response)).message}`, true);
      else if (chat.id === chatId) newChat(true);
      doneEditing();
    });
    no.addEventListener("click", doneEditing);
    item.replaceChildren(question, yes, no);
    yes.focus();
  }

  // The transcript emptied for another conversation (the page's own stream, if any, is let go: a saved
  // chat's answer goes on on the server when it is resumable).
  function clearConversation(hintText) {
    if (controller) controller.abort();
    history = [];
    assistantTurns = [];
    pending = [];
    renderPending();
    say("");
    const hint = el("li", "empty", hintText);
    hint.id = "empty-hint";
    transcript.replaceChildren(hint);
  }

  function newChat(push) {
    ++opening;
    clearConversation("New conversation. Ask anything.");
    chatId = null;
    if (push && window.location.search) window.history.pushState({ chat: null }, "", chatUrl(null));
    markOpen();
    prompt.focus();
  }

  function markOpen() {
    chatList.querySelectorAll(".chat-link").forEach((link) => {
      if (link.closest(".chat-item").dataset.chatId === chatId) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    });
  }

  // Text and files of a stored user message, as the composer would have sent them.
  function userContent(message) {
    const parts = message.parts || [];
    const text = parts.filter((part) => part.type === "text").map((part) => part.text).join("");
    const files = parts.filter((part) => part.type === "file").map((part) => ({
      name: part.filename || "file",
      mediaType: part.mediaType,
      kind: String(part.mediaType).startsWith("image/") ? "image" : "document",
      size: Math.round(((String(part.url).split(",", 2)[1] || "").length * 3) / 4),
      url: String(part.url),
    }));
    return { text, files };
  }

  // A stored assistant message, drawn by the code that draws a stream: its parts as the chunks that made them.
  function showStoredAnswer(message, question) {
    const turn = addAssistantTurn(familySelect.value, endpointPath(), question);
    turn.stored = true;
    turn.messageId = message.id;
    (message.parts || []).forEach((part, index) => {
      const id = `stored-${index}`;
      if (part.type === "step-start") {
        onChunk(turn, { type: "start-step" });
      } else if (part.type === "text") {
        onChunk(turn, { type: "text-start", id });
        onChunk(turn, { type: "text-delta", id, delta: part.text || "" });
        onChunk(turn, { type: "text-end", id });
      } else if (part.type === "reasoning") {
        onChunk(turn, { type: "reasoning-start", id });
        onChunk(turn, { type: "reasoning-delta", id, delta: part.text || "", providerMetadata: part.providerMetadata });
        onChunk(turn, { type: "reasoning-end", id });
      } else if (part.type === "source-url" || part.type === "source-document" || part.type === "file") {
        onChunk(turn, part);
      } else if (isToolPart(part)) {
        const call = callOf(turn, { toolCallId: part.toolCallId, toolName: toolNameOf(part) });
        Object.assign(call.part, part);
      }
    });
    turn.metadata = message.metadata || null;
    const outcome = (message.metadata && message.metadata.status) || "completed";
    finishTurn(turn, outcome);
    if (outcome === "cancelled") turn.meta.append(el("span", "stopped-note", "Stopped: the answer so far is kept."));
  }

  // Open a saved chat: its stored messages, then its answer still running, if any (GET …/stream/: 204
  // none; 200 the answer from its start, then live). Both are asked at once; the running answer's
  // message is drawn from the stream even if it got stored in between.
  async function openChat(id, push) {
    clearConversation("Loading…");
    chatId = id;
    markOpen();
    if (push) window.history.pushState({ chat: id }, "", chatUrl(id));
    const seq = ++opening;
    const local = (controller = new AbortController());
    setStreaming(true);
    let detail, chunks, first;
    try {
      const [answer, live] = await Promise.all([
        fetch(`${api}chat/${encodeURIComponent(id)}/`, { signal: local.signal }),
        fetch(`${api}chat/${encodeURIComponent(id)}/stream/`, { signal: local.signal }),
      ]);
      detail = answer;
      if (live.status === 200) {
        chunks = uiChunks(live.body);
        first = await chunks.next();
      }
    } catch (err) {
      if (seq === opening) first = null; // the stream broke off: what is stored is shown
    }
    if (seq !== opening) {
      // Another chat was opened, or a new one started, meanwhile.
      if (controller === local) {
        controller = null;
        setStreaming(false);
      }
      return;
    }
    controller = null;
    setStreaming(false);
    if (!detail || !detail.ok) {
      clearConversation(detail && detail.status === 404 ? "No such chat (or not yours)." : "The chat could not be loaded.");
      chatId = null;
      window.history.replaceState({ chat: null }, "", chatUrl(null));
      markOpen();
      return;
    }
    const chat = await detail.json();
    clearConversation("No messages yet. Ask anything.");
    const running = first && !first.done && first.value.type === "start" ? first.value.messageId : null;
    let question = null;
    for (const message of chat.messages) {
      if (message.id === running) continue;
      if (message.role === "user") {
        const { text, files } = userContent(message);
        history.push({ role: "user", parts: message.parts });
        question = addUserTurn(text, files);
      } else {
        showStoredAnswer(message, question);
      }
    }
    if (first && !first.done) {
      const turn = addAssistantTurn(familySelect.value, endpointPath(), question);
      turn.item.classList.add("resumed");
      controller = local;
      await stream(turn, { chunks: prepend(first.value, chunks) });
    }
    prompt.focus();
  }

  async function* prepend(chunk, rest) {
    yield chunk;
    yield* rest;
  }

  // -- events ---------------------------------------------------------------------------------------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (controller) return;
    const text = prompt.value.trim();
    const files = pending.slice();
    const problem = problemBeforeSending(text, files);
    if (problem) {
      say(problem, true);
      prompt.focus();
      return;
    }
    send(text, files);
  });

  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  prompt.addEventListener("paste", (event) => {
    const files = event.clipboardData ? [...event.clipboardData.files] : [];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });

  form.addEventListener("dragover", (event) => {
    if ([...event.dataTransfer.types].includes("Files")) {
      event.preventDefault();
      form.classList.add("dragging");
    }
  });
  form.addEventListener("dragleave", (event) => {
    if (!form.contains(event.relatedTarget)) form.classList.remove("dragging");
  });
  form.addEventListener("drop", (event) => {
    form.classList.remove("dragging");
    if (event.dataTransfer.files.length) {
      event.preventDefault();
      addFiles([...event.dataTransfer.files]);
    }
  });

  attachInput.addEventListener("change", async () => {
    await addFiles([...attachInput.files]);
    attachInput.value = ""; // the same file can be chosen again
    prompt.focus();
  });

  stopButton.addEventListener("click", stop);

  document.querySelectorAll(".presets [data-prompt]").forEach((button) => {
    button.addEventListener("click", () => {
      // A tool prompt needs an endpoint with tools: switch to it unless the family in use has some.
      const wanted = button.dataset.family;
      if (wanted && !config.tools[familySelect.value] && !familySelect.disabled) {
        familySelect.value = wanted;
        familySelect.dispatchEvent(new Event("change"));
      }
      prompt.value = button.dataset.prompt;
      prompt.focus();
    });
  });

  $("new-chat").addEventListener("click", () => newChat(true));
  $("sidebar-new").addEventListener("click", () => newChat(true));

  // The mode: saved chats (with the sidebar) or one-off; a chat's URL opens it in saved-chat mode.
  function showMode() {
    layout.classList.toggle("one-off", mode() !== "chat");
    $("sidebar").hidden = mode() !== "chat";
  }
  modeSelect.addEventListener("change", () => {
    localStorage.setItem("bedrock-demo-mode", mode());
    showMode();
    newChat(true);
    doneEditing();
  });
  window.addEventListener("popstate", () => {
    const id = new URLSearchParams(window.location.search).get("chat");
    if (id && mode() === "chat") openChat(id, false);
    else newChat(false);
  });

  const saved = localStorage.getItem("bedrock-demo-family");
  const options = [...familySelect.options].map((option) => option.value);
  if (saved && options.includes(saved)) familySelect.value = saved;
  else if (options.includes(config.toolsEndpoint)) familySelect.value = config.toolsEndpoint; // converse + tools
  else if (options.includes("converse")) familySelect.value = "converse"; // reasoning, citations and files
  familySelect.addEventListener("change", () => {
    localStorage.setItem("bedrock-demo-family", familySelect.value);
    showFamily();
    say("");
  });
  showFamily();
  const opened = new URLSearchParams(window.location.search).get("chat");
  modeSelect.value = opened ? "chat" : localStorage.getItem("bedrock-demo-mode") === "plain" ? "plain" : "chat";
  showMode();
  setStreaming(false);
  refreshChats();
  if (opened) openChat(opened, false);
  prompt.focus();
})();
