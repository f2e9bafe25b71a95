// AI SDK 4's useChat loop without React: callChatApi of @ai-sdk/ui-utils 1.2.11 over real fetch and
// the data stream protocol; a client-side tool answered in onToolCall (as useChat's onToolCall does);
// the conversation posted again while shouldResubmitMessages says so (maxSteps 5), with the fields
// useChat sends when sendExtraMessageFields is off (role, content, toolInvocations, parts).
// Usage: node v4-tool-round-trip.mjs <endpoint-url> <prompt> [<follow-up question>]
// Prints {"posts", "messages", "errors"} as JSON.
import {
  callChatApi,
  extractMaxToolInvocationStep,
  fillMessageParts,
  shouldResubmitMessages,
} from '@ai-sdk/ui-utils';

const [url, prompt, followUp] = process.argv.slice(2);
let messages = [];
let posts = 0;
const errors = [];

const payload = (list) => list.map(({ role, content, toolInvocations, parts }) => ({
  role,
  content,
  ...(toolInvocations !== undefined && { toolInvocations }),
  ...(parts !== undefined && { parts }),
}));

async function request() {
  posts += 1;
  const before = messages;
  try {
    await callChatApi({
      api: url,
      body: { messages: payload(before) },
      streamProtocol: 'data',
      restoreMessagesOnFailure: () => void (messages = before),
      onUpdate: ({ message, replaceLastMessage }) => {
        messages = [...(replaceLastMessage ? before.slice(0, -1) : before), message];
      },
      onToolCall: async ({ toolCall }) => (toolCall.toolName === 'local_time' ? { time: '10:42' } : undefined),
      generateId: () => `m${posts}`,
      fetch,
      lastMessage: before.at(-1),
    });
  } catch (error) {
    errors.push(String(error.message ?? error));
  }
}

async function ask(text) {  // useChat's append, then its automatic resubmissions
  messages = [...messages, ...fillMessageParts([{ id: `u${posts}`, role: 'user', content: text }])];
  const count = messages.length;
  const maxStep = extractMaxToolInvocationStep(messages.at(-1)?.toolInvocations);
  await request();
  while (errors.length === 0 && posts < 6 && shouldResubmitMessages({
    originalMaxToolInvocationStep: maxStep, originalMessageCount: count, maxSteps: 5, messages,
  })) {
    await request();
  }
}

await ask(prompt);
if (followUp) await ask(followUp);
process.stdout.write(JSON.stringify({ posts, messages, errors }) + '\n');
