// What the scripts driving a chat kept on the server (README "Chats") share: the README's DefaultChatTransport
// (only the last message sent; resume at chat/<id>/stream/), a fetch keeping the session cookie (an anonymous
// visitor's chats are the session's), and the wait for a chat to settle.

/**
 * A fetch that sends the session cookie (from `cookie` on, then the server's) and records each request's
 * JSON body and each answer's URL, status and X-Upstream header (which worker nginx picked).
 */
export function cookieFetch(cookie = '') {
  const bodies = [];
  const answers = [];
  const fetchWithCookie = async (input, init = {}) => {
    if (init.body) bodies.push(JSON.parse(init.body));
    const headers = new Headers(init.headers);
    if (cookie) headers.set('cookie', cookie);
    const response = await fetch(input, { ...init, headers });
    answers.push({ url: String(input), status: response.status, upstream: response.headers.get('x-upstream') });
    const set = response.headers.getSetCookie?.() ?? [];
    if (set.length) cookie = set.map((c) => c.split(';')[0]).join('; ');
    return response;
  };
  return { fetch: fetchWithCookie, bodies, answers };
}

/** The README's transport: POST `${base}${endpoint}` with the new message only, resume at `${base}/bedrock/chat/<id>/stream/`. */
export function chatTransport(ai, { base, endpoint = '/bedrock/chat/', fetch }) {
  return new ai.DefaultChatTransport({
    api: `${base}${endpoint}`,
    fetch,
    prepareSendMessagesRequest: ({ id, messages }) => ({ body: { id, message: messages.at(-1) } }),
    prepareReconnectToStreamRequest: ({ id }) => ({ api: `${base}/bedrock/chat/${id}/stream/` }),
  });
}

/** Resolves once the chat has been ready (or in error) for half a second: automatic sends have had their turn. */
export async function settled(chat) {
  for (let quiet = 0; quiet < 10; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    quiet = chat.status === 'ready' || chat.status === 'error' ? quiet + 1 : 0;
  }
}
