// Agent Inbox's calls on one inbox (graph_id) and one of its threads, as it makes them
// (contexts/ThreadContext.tsx, hooks/use-interrupted-actions.tsx, utils.ts):
// args = {graphId, threadId, action: "resume" | "ignore", response?: HumanResponse}.
import { args, inboxClient, main } from "./lib.mjs";

main(async () => {
  const client = inboxClient();
  const { graphId, threadId, action } = args;

  // The inbox's list: interrupted threads of this graph, sorted by created_at in the client.
  const listed = await client.threads.search({
    offset: 0,
    limit: 100,
    status: "interrupted",
    metadata: { graph_id: graphId },
  });
  listed.sort((a, b) => new Date(b.created_at) - new Date(a.created_at));
  const thread = await client.threads.get(threadId);
  // Where the inbox reads the interrupt it renders.
  const pending = Object.values(thread.interrupts ?? {});
  const request = pending.length ? pending[0][0]?.value : undefined;
  // Its fallback when the thread has none: the last interrupt of the state's last task.
  const state = await client.threads.getState(threadId);
  const fallback = state.tasks.at(-1)?.interrupts.at(-1)?.value;

  const events = [];
  if (action === "resume") {
    const stream = client.runs.stream(threadId, graphId, {
      command: { resume: [args.response] },
      streamMode: "events",
    });
    for await (const chunk of stream) {
      events.push({
        event: chunk.event,
        // on_chain_start events name the node the inbox shows as running.
        kind: chunk.data?.event ?? null,
        node: chunk.data?.metadata?.langgraph_node ?? null,
      });
    }
  } else if (action === "ignore") {
    // "Mark as resolved".
    await client.threads.updateState(threadId, { values: null, asNode: "__end__" });
  } else {
    throw new Error(`unknown action ${action}`);
  }
  const after = await client.threads.get(threadId);
  const relisted = await client.threads.search({
    offset: 0,
    limit: 100,
    status: "interrupted",
    metadata: { graph_id: graphId },
  });
  return {
    listed: listed.map((item) => ({ thread_id: item.thread_id, status: item.status })),
    thread: { thread_id: thread.thread_id, status: thread.status, metadata: thread.metadata },
    request,
    fallback,
    next: state.next,
    events,
    after: { status: after.status, values: after.values, interrupts: after.interrupts },
    relisted: relisted.map((item) => item.thread_id),
  };
});
