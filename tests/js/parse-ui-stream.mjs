// Parse an AI SDK UI message stream body the way useChat does (AbstractChat + DefaultChatTransport whose fetch
// returns the captured body) and with readUIMessageStream (ui-readers.mjs), with the `ai` package named by --ai.
// Usage: node parse-ui-stream.mjs [body-file|-] [--chunk-size N] [--ai ai|ai6|ai5]
// Prints {"version","status","error","finishReason","message","read"} as JSON: `message` is the assistant
// UIMessage useChat rebuilt ({id, role, metadata, parts}), `read` is readUIMessageStream's {error, message}.
import { bodyStream, printJson, readBodyFromArgs } from './read-body.mjs';
import { loadAi } from './memory-chat.mjs';
import { chatOverUI, readUI } from './ui-readers.mjs';

const { body, chunkSize, ai: name } = await readBodyFromArgs();
const client = await loadAi(name);
const fetch = async () =>
  new Response(bodyStream(body, chunkSize), { status: 200, headers: client.ai.UI_MESSAGE_STREAM_HEADERS });

printJson({
  ...(await chatOverUI(client, { api: 'http://test.invalid/chat', fetch })),
  read: await readUI(client, body, chunkSize),
});
