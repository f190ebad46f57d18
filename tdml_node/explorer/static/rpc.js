// The node's JSON-RPC over HTTP (POST /, single calls and batches) and the
// newBlocks subscription over GET /ws, reconnecting when the socket drops.
// Nothing here knows what the page shows.

export class RpcError extends Error {}

let nextId = 1;

async function post(body) {
  const response = await fetch("/", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new RpcError(`HTTP ${response.status} from the node`);
  return response.json();
}

function unwrap(answer) {
  if (answer.error) throw new RpcError(`${answer.error.code}: ${answer.error.message}`);
  return answer.result;
}

export async function call(method, ...params) {
  return unwrap(await post({ jsonrpc: "2.0", id: nextId++, method, params }));
}

const MAX_BATCH = 100; // the server's limit

// calls: [[method, ...params], ...] -> results in the same order.
export async function batch(calls) {
  const results = [];
  for (let i = 0; i < calls.length; i += MAX_BATCH) {
    const chunk = calls.slice(i, i + MAX_BATCH).map(([method, ...params]) => ({ jsonrpc: "2.0", id: nextId++, method, params }));
    const answers = await post(chunk);
    const byId = new Map(answers.map((a) => [a.id, a]));
    for (const request of chunk) results.push(unwrap(byId.get(request.id)));
  }
  return results;
}

// onBlock(summary) for every committed block; onStatus(true) once subscribed
// (again after each reconnect, so the caller can catch up), onStatus(false) on a drop.
export function subscribeBlocks(onBlock, onStatus) {
  let delay = 500;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    let subscription = null;
    ws.onopen = () => ws.send(JSON.stringify({ jsonrpc: "2.0", id: "sub", method: "tdml_subscribe", params: ["newBlocks"] }));
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.id === "sub" && msg.result) {
        subscription = msg.result;
        delay = 500;
        onStatus(true);
      } else if (msg.method === "tdml_subscription" && msg.params.subscription === subscription) {
        onBlock(msg.params.result);
      }
    };
    ws.onclose = () => {
      onStatus(false);
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
}
