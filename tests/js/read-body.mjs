// Shared by the parse-*.mjs scripts: read a captured response body and replay it as a network stream.
import { readFile } from 'node:fs/promises';

/**
 * Parse `[path] [--chunk-size N] [--ai NAME]` from argv. Without a path (or with "-") the body is read from
 * stdin. With --chunk-size the body is delivered in N-byte pieces, as a network might split it
 * (possibly inside a UTF-8 character or a JSON value). --ai names the `ai` package to use (memory-chat.mjs).
 */
export async function readBodyFromArgs(argv = process.argv.slice(2)) {
  let path = '-';
  let chunkSize = 0;
  let ai = 'ai';
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--chunk-size') chunkSize = Number(argv[++i]);
    else if (argv[i] === '--ai') ai = argv[++i];
    else path = argv[i];
  }
  if (!Number.isInteger(chunkSize) || chunkSize < 0) throw new Error(`bad --chunk-size: ${chunkSize}`);
  const body = path === '-' ? await readStdin() : new Uint8Array(await readFile(path));
  return { body, chunkSize, ai };
}

async function readStdin() {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return new Uint8Array(Buffer.concat(parts));
}

/** A ReadableStream<Uint8Array> of the body, whole or in chunkSize-byte pieces. */
export function bodyStream(body, chunkSize = 0) {
  const size = chunkSize > 0 ? chunkSize : Math.max(body.length, 1);
  return new ReadableStream({
    start(controller) {
      for (let i = 0; i < body.length; i += size) controller.enqueue(body.slice(i, i + size));
      controller.close();
    },
  });
}

export function printJson(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}
