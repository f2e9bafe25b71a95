// A chat kept on the server (README "Chats") through useChat's machinery: AbstractChat + DefaultChatTransport
// with prepareSendMessagesRequest sending only the last message and prepareReconnectToStreamRequest pointing
// at chat/<id>/stream/, over real fetch with the session cookie kept (an anonymous chat is the session's).
// Usage: node server-chat.mjs <base-url> <ai|ai6|ai5> <chat-id> <endpoint-path> <prompt> [<prompt>...]
//   The client-side tool `local_time` is answered with {time: "10:42"} (addToolOutput, or ai 5's addToolResult).
// Prints {"bodies", "errors", "status", "messages", "resumed"} as JSON once the chat has settled.
import { loadAi } from './memory-chat.mjs';

const [base, name, chatId, endpoint, ...prompts] = process.argv.slice(2);
const { ai, MemoryChat } = await loadAi(name);
const bodies = [];
let cookie = '';
const withCookies = async (input, init = {}) => {
  if (init.body) bodies.push(JSON.parse(init.body));
  const headers = new Headers(init.headers);
  if (cookie) headers.set('cookie', cookie);
  const response = await fetch(input, { ...init, headers });
  const set = response.headers.getSetCookie?.() ?? [];
  if (set.length) cookie = set.map((c) => c.split(';')[0]).join('; ');
  return response;
};
const errors = [];
const chat = new MemoryChat({
  id: chatId,
  transport: new ai.DefaultChatTransport({
    api: `${base}${endpoint}`,
    fetch: withCookies,
    prepareSendMessagesRequest: ({ id, messages }) => ({ body: { id, message: messages.at(-1) } }),
    prepareReconnectToStreamRequest: ({ id }) => ({ api: `${base}/bedrock/chat/${id}/stream/` }),
  }),
  sendAutomaticallyWhen: ai.lastAssistantMessageIsCompleteWithToolCalls,
  onToolCall: async ({ toolCall }) => {
    if (toolCall.toolName !== 'local_time') return;
    const answer = (chat.addToolOutput ?? chat.addToolResult).bind(chat);
    answer({ tool: 'local_time', toolCallId: toolCall.toolCallId, output: { time: '10:42' } });
  },
  onError: (error) => void errors.push(String(error)),
});

async function settled() {
  for (let quiet = 0; quiet < 10; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    quiet = chat.status === 'ready' || chat.status === 'error' ? quiet + 1 : 0;
  }
}

for (const prompt of prompts) {
  await chat.sendMessage({ text: prompt });
  await settled();
}
const before = JSON.stringify(chat.messages);
await chat.resumeStream(); // nothing runs: 204, the chat is left as it was
await settled();
const resumed = JSON.stringify(chat.messages) !== before;
process.stdout.write(JSON.stringify({ bodies, errors, status: chat.status, messages: chat.messages, resumed }) + '\n');
