// useChat without React: the `ai` package's AbstractChat over plain arrays (shared by the Node scripts).
// Several majors of `ai` are installed side by side (package.json): "ai" (the newest, 7.x) and the npm
// aliases "ai6" (6.x) and "ai5" (5.x); loadAi() picks one by that name.
import { AbstractChat } from 'ai';

export const AI_PACKAGES = ['ai', 'ai6', 'ai5'];

/** The smallest ChatState: plain arrays (useChat's React state does the same with re-renders). */
class MemoryChatState {
  status = 'ready';
  error = undefined;
  constructor(messages = []) {
    this.messages = [...messages]; // useChat's initial `messages`
  }
  pushMessage = (message) => void this.messages.push(message);
  popMessage = () => void this.messages.pop();
  replaceMessage = (index, message) => void (this.messages[index] = message);
  snapshot = (thing) => structuredClone(thing);
}

function memoryChatClass(Base) {
  return class MemoryChat extends Base {
    constructor(options) {
      super({ ...options, state: new MemoryChatState(options.messages) });
    }
  };
}

export const MemoryChat = memoryChatClass(AbstractChat);

/** The named `ai` package's module and a MemoryChat class built on its own AbstractChat. */
export async function loadAi(name = 'ai') {
  if (!AI_PACKAGES.includes(name)) throw new Error(`unknown ai package ${JSON.stringify(name)}: one of ${AI_PACKAGES}`);
  const ai = await import(name);
  return { ai, MemoryChat: memoryChatClass(ai.AbstractChat) };
}
