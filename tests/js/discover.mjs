// What Agent Inbox asks first: GET /info without the key (for its "Open in Studio" links), then
// the assistants the key sees.
import { apiUrl, inboxClient, main } from "./lib.mjs";

main(async () => {
  const response = await fetch(`${apiUrl}/info`);
  const info = { status: response.status, body: await response.json() };
  const client = inboxClient();
  const assistants = await client.assistants.search();
  const assistant = await client.assistants.get("content_review");
  return {
    info,
    assistants: assistants.map((item) => item.assistant_id),
    graph_id: assistant.graph_id,
  };
});
