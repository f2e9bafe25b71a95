// Drive LIVE django-bedrock-stream endpoints with the AI SDK's own clients over real fetch, one job at a time.
// Usage: node chat-clients.mjs [ai|ai6|ai5] < jobs.json     jobs: [{"url", "protocol": "ui"|"data", "prompt"}]
// Prints a JSON array, one result per job: {"httpStatus", "contentType", ...}, and
//   ui  : useChat's machinery (ui-readers.mjs chatOverUI: status, error, finishReason, message) and, over the
//         same body, "read" (readUIMessageStream: {error, message}), with the `ai` package named in argv;
//   data: "chat" (callChatApi, AI SDK 4 useChat: {error, finishReason, usage, message}) and, over the same
//         body, "parts" (processDataStream's parts), both from @ai-sdk/ui-utils.
import { chatOverData, readData } from './data-readers.mjs';
import { loadAi } from './memory-chat.mjs';
import { printJson } from './read-body.mjs';
import { chatOverUI, readUI } from './ui-readers.mjs';

const client = await loadAi(process.argv[2] ?? 'ai');
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const jobs = JSON.parse(Buffer.concat(chunks).toString('utf8'));

/** A fetch that hands the reader the live response and keeps a copy of its bytes for the second reader. */
function teeFetch() {
  const seen = { httpStatus: null, contentType: null, body: Promise.resolve(new ArrayBuffer(0)) };
  const teeing = async (input, init) => {
    const response = await fetch(input, init);
    seen.httpStatus = response.status;
    seen.contentType = response.headers.get('content-type');
    if (!response.body) return response;
    const [reader, copy] = response.body.tee();
    seen.body = new Response(copy).arrayBuffer();
    return new Response(reader, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
  return { fetch: teeing, seen };
}

const results = [];
for (const { url, protocol, prompt } of jobs) {
  const { fetch: teeing, seen } = teeFetch();
  let result;
  if (protocol === 'ui') {
    const chat = await chatOverUI(client, { api: url, fetch: teeing, text: prompt });
    result = { ...chat, read: await readUI(client, new Uint8Array(await seen.body)) };
  } else if (protocol === 'data') {
    const chat = await chatOverData({ api: url, fetch: teeing, text: prompt });
    result = { chat, parts: await readData(new Uint8Array(await seen.body)) };
  } else {
    throw new Error(`unknown protocol ${JSON.stringify(protocol)}`);
  }
  results.push({ httpStatus: seen.httpStatus, contentType: seen.contentType, ...result });
}
printJson(results);
