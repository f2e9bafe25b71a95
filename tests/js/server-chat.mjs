// A chat kept on the server (README "Chats") through useChat's machinery: AbstractChat + DefaultChatTransport
// with prepareSendMessagesRequest sending only the last message and prepareReconnectToStreamRequest pointing
// at chat/<id>/stream/, over real fetch with the session cookie kept (an anonymous chat is the session's).
// Usage: node server-chat.mjs <base-url> <ai|ai6|ai5> <chat-id> <endpoint-path> <prompt> [<prompt>...]
//   The client-side tool `local_time` is answered with {time: "10:42"} (addToolOutput, or ai 5's addToolResult).
// Prints {"bodies", "errors", "status", "messages", "resumed"} as JSON once the chat has settled.
import { chatTransport, cookieFetch, settled } from './chat-session.mjs';
import { loadAi } from './memory-chat.mjs';

const [base, name, chatId, endpoint, ...prompts] = process.argv.slice(2);
const { ai, MemoryChat } = await loadAi(name);
const { fetch, bodies } = cookieFetch();
const errors = [];
const chat = new MemoryChat({
  id: chatId,
  transport: chatTransport(ai, { base, endpoint, fetch }),
  sendAutomaticallyWhen: ai.lastAssistantMessageIsCompleteWithToolCalls,
  onToolCall: async ({ toolCall }) => {
    if (toolCall.toolName !== 'local_time') return;
    const answer = (chat.addToolOutput ?? chat.addToolResult).bind(chat);
    answer({ tool: 'local_time', toolCallId: toolCall.toolCallId, output: { time: '10:42' } });
  },
  onError: (error) => void errors.push(String(error)),
});

for (const prompt of prompts) {
  await chat.sendMessage({ text: prompt });
  await settled(chat);
}
const before = JSON.stringify(chat.messages);
await chat.resumeStream(); // nothing runs: 204, the chat is left as it was
await settled(chat);
const resumed = JSON.stringify(chat.messages) !== before;
process.stdout.write(JSON.stringify({ bodies, errors, status: chat.status, messages: chat.messages, resumed }) + '\n');
