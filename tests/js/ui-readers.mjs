// The two ways the `ai` package (AI SDK 5+) turns a UI message stream into a UIMessage, shared by the scripts:
// useChat's machinery (AbstractChat + DefaultChatTransport: SSE -> parseJsonEventStream with
// uiMessageChunkSchema -> processUIMessageStream) and the lower-level readUIMessageStream.
import { bodyStream } from './read-body.mjs';

/** What a test compares: the message without functions or undefined values (JSON). */
export function plainMessage(message) {
  if (message == null) return null;
  const { id, role, metadata, parts } = message;
  return JSON.parse(JSON.stringify({ id, role, metadata: metadata ?? null, parts }));
}

/**
 * Send one user message through AbstractChat + DefaultChatTransport; `fetch` answers the request (the
 * network, or a captured body). Returns the chat's status and error, onFinish's finishReason and the
 * assistant message it rebuilt.
 */
export async function chatOverUI({ MemoryChat, ai }, { api, fetch, text = 'hello' }) {
  let finished = null;
  const chat = new MemoryChat({
    transport: new ai.DefaultChatTransport({ api, fetch }),
    onFinish: (event) => void (finished = event),
    onError: () => {},
  });
  await chat.sendMessage({ text });
  const last = chat.messages.at(-1);
  const message = finished?.message ?? (last?.role === 'assistant' ? last : null);
  return {
    status: chat.status,
    error: chat.error ? chat.error.message : null,
    finishReason: finished?.finishReason ?? null,
    message: plainMessage(message),
  };
}

/** readUIMessageStream over the package's own SSE + chunk-schema parsing: the last UIMessage snapshot,
 * or {error} when a chunk fails the schema or the stream carries an error chunk. */
export async function readUI({ ai }, body, chunkSize = 0) {
  const chunks = ai.parseJsonEventStream({ stream: bodyStream(body, chunkSize), schema: ai.uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        if (!chunk.success) throw chunk.error;
        controller.enqueue(chunk.value);
      },
    }),
  );
  let last = null;
  try {
    for await (const snapshot of ai.readUIMessageStream({ stream: chunks, terminateOnError: true })) last = snapshot;
  } catch (error) {
    return { error: String(error?.message ?? error), message: plainMessage(last) };
  }
  return { error: null, message: plainMessage(last) };
}
