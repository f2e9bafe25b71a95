// The two ways AI SDK 3.x-4.x read a data stream v1 (@ai-sdk/ui-utils), shared by the scripts:
// processDataStream's raw parts, and callChatApi (what AI SDK 4's useChat calls), which rebuilds the message.
import { callChatApi, processDataStream } from '@ai-sdk/ui-utils';
import { bodyStream } from './read-body.mjs';

/** Every part processDataStream reports, by kind, in order (tool parts as [code, value]; every step's e:). */
export async function readData(body, chunkSize = 0) {
  const result = {
    messageId: null, text: '', reasoning: [], signatures: [], redacted: [], sources: [], files: [],
    tools: [], steps: [], step: null, finishReason: null, usage: null, errors: [],
  };
  const tool = (kind) => (value) => void result.tools.push([kind, value]);
  await processDataStream({
    stream: bodyStream(body, chunkSize),
    onStartStepPart: (value) => void (result.messageId = value.messageId),
    onTextPart: (value) => void (result.text += value),
    onReasoningPart: (value) => void result.reasoning.push(value),
    onReasoningSignaturePart: (value) => void result.signatures.push(value),
    onRedactedReasoningPart: (value) => void result.redacted.push(value),
    onSourcePart: (value) => void result.sources.push(value),
    onFilePart: (value) => void result.files.push(value),
    onErrorPart: (value) => void result.errors.push(value),
    onToolCallStreamingStartPart: tool('b'),
    onToolCallDeltaPart: tool('c'),
    onToolCallPart: tool('9'),
    onToolResultPart: tool('a'),
    onFinishStepPart: (value) => {
      result.steps.push(value);
      result.step = value;
    },
    onFinishMessagePart: (value) => {
      result.finishReason = value.finishReason;
      result.usage = value.usage ?? null;
    },
  });
  return result;
}

/** AI SDK 4 useChat's request: callChatApi with streamProtocol "data"; `fetch` answers it. The
 * assistant message it rebuilt (id, content, reasoning, parts) and onFinish's finishReason and usage. */
export async function chatOverData({ api, fetch, text = 'hello' }) {
  let message = null;
  let finish = null;
  let error = null;
  try {
    await callChatApi({
      api,
      fetch,
      body: { messages: [{ role: 'user', content: text }] },
      streamProtocol: 'data',
      restoreMessagesOnFailure: () => {},
      onUpdate: ({ message: update }) => void (message = update),
      onFinish: (final, details) => void (finish = { message: final, ...details }),
      generateId: () => 'generated-id',
      lastMessage: undefined,
    });
  } catch (err) {
    error = String(err?.message ?? err);
  }
  const final = finish?.message ?? message;
  return {
    error,
    finishReason: finish?.finishReason ?? null,
    usage: finish?.usage ?? null,
    message: final && JSON.parse(JSON.stringify({
      id: final.id, role: final.role, content: final.content, reasoning: final.reasoning ?? null, parts: final.parts,
    })),
  };
}
