// A tool round trip through useChat's machinery (AbstractChat + DefaultChatTransport, real fetch) against
// a LIVE endpoint: the browser answers what the stream hands it and the chat posts the conversation back.
// Usage: node tool-round-trip.mjs <endpoint-url> <ai|ai6|ai5> <server|client|approve|deny> <prompt>
//   server : the server runs its tool between two model turns of one response; nothing is sent back
//            (sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls, which must not fire)
//   client : onToolCall answers the client-side tool `local_time` with {time: "10:42"} (addToolOutput, or
//            ai 5's addToolResult); sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls
//   approve / deny : the approval request is answered with addToolApprovalResponse (ai 6+);
//            sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses
// Prints {"posts", "errors", "status", "messages"} as JSON once the chat has settled.
import { loadAi } from './memory-chat.mjs';

const [url, name, flow, prompt] = process.argv.slice(2);
const { ai, MemoryChat } = await loadAi(name);
let posts = 0;
const counting = async (input, init) => {
  posts += 1;
  return fetch(input, init);
};
const errors = [];
const chat = new MemoryChat({
  transport: new ai.DefaultChatTransport({ api: url, fetch: counting }),
  sendAutomaticallyWhen:
    flow === 'client' || flow === 'server'
      ? ai.lastAssistantMessageIsCompleteWithToolCalls
      : ai.lastAssistantMessageIsCompleteWithApprovalResponses,
  onToolCall: async ({ toolCall }) => {
    if (toolCall.toolName !== 'local_time') return;
    const answer = (chat.addToolOutput ?? chat.addToolResult).bind(chat);
    answer({ tool: 'local_time', toolCallId: toolCall.toolCallId, output: { time: '10:42' } });
  },
  onError: (error) => void errors.push(String(error)),
});

/** Until the chat has been ready for half a second: automatic sends start after a stream ends. */
async function settled() {
  for (let quiet = 0; quiet < 10; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    quiet = chat.status === 'ready' || chat.status === 'error' ? quiet + 1 : 0;
  }
}

await chat.sendMessage({ text: prompt });
await settled();
if (flow === 'approve' || flow === 'deny') {
  const part = chat.messages.at(-1).parts.find((p) => p.state === 'approval-requested');
  const approved = flow === 'approve';
  await chat.addToolApprovalResponse({ id: part.approval.id, approved, reason: approved ? undefined : 'Keep it.' });
  await settled();
}
process.stdout.write(JSON.stringify({ posts, errors, status: chat.status, messages: chat.messages }) + '\n');
