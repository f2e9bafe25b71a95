// Parse an AI SDK data stream v1 body with @ai-sdk/ui-utils (AI SDK 3.x-4.x): processDataStream's raw parts
// and the message callChatApi (AI SDK 4 useChat) rebuilds (data-readers.mjs).
// Usage: node parse-data-stream.mjs [body-file|-] [--chunk-size N]
// Prints processDataStream's parts ({"messageId","text","reasoning","signatures","redacted","sources","files","tools",
// "steps","step","finishReason","usage","errors"}) plus "chat": callChatApi's {error, finishReason, usage, message}.
import { bodyStream, printJson, readBodyFromArgs } from './read-body.mjs';
import { chatOverData, readData } from './data-readers.mjs';

const { body, chunkSize } = await readBodyFromArgs();
const fetch = async () => new Response(bodyStream(body, chunkSize), { status: 200 });

printJson({ ...(await readData(body, chunkSize)), chat: await chatOverData({ api: 'http://test.invalid/chat', fetch }) });
