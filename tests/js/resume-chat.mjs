// useChat's `resume: true` on a chat kept on the server whose stream another client started (README
// "Resumable streams"): for each `ai` package named, at once, what a page does on load: GET chat/<id>/ (the
// stored messages, useChat's `messages`), then what useChat does on mount with `resume: true`,
// chat.resumeStream(), through the README's transport (chat-session.mjs), with the visitor's session cookie.
// Usage: node resume-chat.mjs <base-url> <session-cookie> <chat-id> <ai|ai6|ai5>...
// Prints {"<package>": {"errors", "status", "messages", "answers"}} as JSON once every chat has settled.
import { chatTransport, cookieFetch, settled } from './chat-session.mjs';
import { loadAi } from './memory-chat.mjs';
import { printJson } from './read-body.mjs';

const [base, cookie, chatId, ...names] = process.argv.slice(2);

async function resume(name) {
  const { ai, MemoryChat } = await loadAi(name);
  const { fetch, answers } = cookieFetch(cookie);
  const { messages } = await (await fetch(`${base}/bedrock/chat/${chatId}/`)).json();
  const errors = [];
  const chat = new MemoryChat({
    id: chatId,
    messages,
    transport: chatTransport(ai, { base, fetch }),
    onError: (error) => void errors.push(String(error)),
  });
  await chat.resumeStream();
  await settled(chat);
  return [name, { errors, status: chat.status, messages: chat.messages, answers }];
}

printJson(Object.fromEntries(await Promise.all(names.map(resume))));
