// Parse an AI SDK data stream v1 body with @ai-sdk/ui-utils' own processDataStream (what AI SDK 4 useChat uses).
// Usage: node parse-data-stream.mjs [body-file|-] [--chunk-size N]
// Prints {"text","finishReason","usage","messageId","step","errors"} as JSON.
import { processDataStream } from '@ai-sdk/ui-utils';
import { bodyStream, printJson, readBodyFromArgs } from './read-body.mjs';

const { body, chunkSize } = await readBodyFromArgs();
const result = { text: '', finishReason: null, usage: null, messageId: null, step: null, errors: [] };

await processDataStream({
  stream: bodyStream(body, chunkSize),
  onStartStepPart(value) {
    result.messageId = value.messageId;
  },
  onTextPart(value) {
    result.text += value;
  },
  onErrorPart(value) {
    result.errors.push(value);
  },
  onFinishStepPart(value) {
    result.step = value;
  },
  onFinishMessagePart(value) {
    result.finishReason = value.finishReason;
    result.usage = value.usage ?? null;
  },
});

printJson(result);
