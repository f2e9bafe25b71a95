// Drive a LIVE django-bedrock-stream endpoint with the AI SDK's own client code and real fetch.
// Usage: node live-clients.mjs <endpoint-url> <ui|text|data> <prompt>
//   ui   : useChat's machinery (AbstractChat + DefaultChatTransport), UI message stream protocol
//   text : AbstractChat + TextStreamChatTransport, plain text protocol
//   data : processDataStream from @ai-sdk/ui-utils (AI SDK 3.x-4.x data stream v1) over fetch
// Prints {"text", "finishReason", "usage", "status", "error", "sentBody"} as JSON.
import { processDataStream } from '@ai-sdk/ui-utils';
import { DefaultChatTransport, TextStreamChatTransport } from 'ai';
import { MemoryChat } from './memory-chat.mjs';

const [url, mode, prompt] = process.argv.slice(2);
let sentBody = null;
const recordingFetch = async (input, init) => {
  sentBody = init?.body ? JSON.parse(init.body) : null;
  return fetch(input, init);
};

async function viaChat(Transport) {
  let finished = null;
  const chat = new MemoryChat({
    transport: new Transport({ api: url, fetch: recordingFetch }),
    onFinish: (event) => void (finished = event),
    onError: () => {},
  });
  await chat.sendMessage({ text: prompt });
  const message = chat.messages.at(-1);
  const text = message?.role === 'assistant'
    ? message.parts.filter((part) => part.type === 'text').map((part) => part.text).join('')
    : '';
  return {
    text,
    finishReason: finished?.finishReason ?? message?.metadata?.finishReason ?? null,
    usage: message?.metadata?.usage ?? null,
    status: chat.status,
    error: chat.error ? chat.error.message : null,
  };
}

async function viaDataStream() {
  const response = await recordingFetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: prompt }] }),
  });
  let text = '';
  let finishReason = null;
  let usage = null;
  const errors = [];
  await processDataStream({
    stream: response.body,
    onTextPart: (part) => void (text += part),
    onErrorPart: (part) => void errors.push(part),
    onFinishMessagePart: (part) => {
      finishReason = part.finishReason;
      usage = part.usage;
    },
  });
  return { text, finishReason, usage, status: response.status, error: errors[0] ?? null };
}

const result = mode === 'data' ? await viaDataStream() : await viaChat(mode === 'ui' ? DefaultChatTransport : TextStreamChatTransport);
process.stdout.write(JSON.stringify({ ...result, sentBody }) + '\n');
