// What every script shares: the client built as Agent Inbox builds it, the arguments the test
// passed, and one JSON document on stdout (an error and the server's answer on stderr, exit 1).
import { Client } from "@langchain/langgraph-sdk";

export const apiUrl = process.env.SIGNOFF_API_URL;
export const apiKey = process.env.SIGNOFF_API_KEY || null;
export const args = JSON.parse(process.env.SIGNOFF_ARGS || "{}");

// Agent Inbox (src/lib/client.ts) sends the key it was given as x-api-key, and none otherwise.
// No retries: a refusal should fail the test at once, with what the server said.
export function inboxClient(key = apiKey) {
  return new Client({
    apiUrl,
    apiKey: null,
    defaultHeaders: key ? { "x-api-key": key } : {},
    callerOptions: { maxRetries: 0 },
  });
}

export async function main(body) {
  try {
    const result = await body();
    process.stdout.write(JSON.stringify(result));
  } catch (error) {
    process.stderr.write(`${error?.stack ?? error}\n`);
    if (error?.status !== undefined) process.stderr.write(`status: ${error.status}\n`);
    if (error?.message) process.stderr.write(`message: ${error.message}\n`);
    process.exit(1);
  }
}
