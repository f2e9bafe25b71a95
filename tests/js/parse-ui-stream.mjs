// Parse an AI SDK UI message stream body the way useChat does: the `ai` package's AbstractChat driving a
// DefaultChatTransport whose fetch returns the captured body (SSE -> parseJsonEventStream with
// uiMessageChunkSchema -> processUIMessageStream). Also replays the chunks through readUIMessageStream.
// Usage: node parse-ui-stream.mjs [body-file|-] [--chunk-size N]
// Prints {"text","finishReason","metadata","usage","messageId","status","error","textState",
//         "readUIMessageStreamText"} as JSON.
import {
  DefaultChatTransport,
  UI_MESSAGE_STREAM_HEADERS,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} from 'ai';
import { bodyStream, printJson, readBodyFromArgs } from './read-body.mjs';
import { MemoryChat } from './memory-chat.mjs';

const { body, chunkSize } = await readBodyFromArgs();

let finished = null;
const chat = new MemoryChat({
  transport: new DefaultChatTransport({
    api: 'http://test.invalid/chat',
    fetch: async () => new Response(bodyStream(body, chunkSize), { status: 200, headers: UI_MESSAGE_STREAM_HEADERS }),
  }),
  onFinish: (event) => {
    finished = event;
  },
  onError: () => {},
});

await chat.sendMessage({ text: 'hello' });

const message = finished?.message ?? chat.messages.at(-1);
const textParts = (message?.role === 'assistant' ? message.parts : []).filter((part) => part.type === 'text');

// Second, lower-level reader: readUIMessageStream over the package's own SSE + schema parsing.
let readText = null;
try {
  const chunks = parseJsonEventStream({ stream: bodyStream(body, chunkSize), schema: uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        if (!chunk.success) throw chunk.error;
        controller.enqueue(chunk.value);
      },
    }),
  );
  for await (const snapshot of readUIMessageStream({ stream: chunks, terminateOnError: true })) {
    readText = snapshot.parts.filter((part) => part.type === 'text').map((part) => part.text).join('');
  }
} catch (error) {
  // An error chunk ends the stream here; the chat result above reports it.
}

printJson({
  text: textParts.map((part) => part.text).join(''),
  finishReason: finished?.finishReason ?? null,
  metadata: message?.metadata ?? null,
  usage: message?.metadata?.usage ?? null,
  messageId: message?.role === 'assistant' ? message.id : null,
  status: chat.status,
  error: chat.error ? chat.error.message : null,
  textState: textParts.map((part) => part.state ?? null),
  readUIMessageStreamText: readText,
});
