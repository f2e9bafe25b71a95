// useChat without React: the `ai` package's AbstractChat over plain arrays (shared by the Node scripts).
import { AbstractChat } from 'ai';

/** The smallest ChatState: plain arrays (useChat's React state does the same with re-renders). */
class MemoryChatState {
  status = 'ready';
  error = undefined;
  messages = [];
  pushMessage = (message) => void this.messages.push(message);
  popMessage = () => void this.messages.pop();
  replaceMessage = (index, message) => void (this.messages[index] = message);
  snapshot = (thing) => structuredClone(thing);
}

export class MemoryChat extends AbstractChat {
  constructor(options) {
    super({ ...options, state: new MemoryChatState() });
  }
}
