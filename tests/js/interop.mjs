// Interop scenario: drive a Durable Streams server with the npm reference
// client (@durable-streams/client) and report what each step observed.
//
// Usage: node interop.mjs BASE_URL NAME_PREFIX
// Prints one JSON object on stdout: { "<check>": { ok, ...observed } }.
// Exit code 0 iff every check is ok; a global timeout makes it stop by itself.
import {
  DurableStream,
  IdempotentProducer,
  stream,
} from "@durable-streams/client"

const [baseUrl, prefix] = process.argv.slice(2)
if (!baseUrl || !prefix) {
  console.error("usage: node interop.mjs BASE_URL NAME_PREFIX")
  process.exit(2)
}
const urlOf = (name) => `${baseUrl}/v1/stream/${prefix}-${name}`
const results = {}
const hardStop = setTimeout(() => {
  results.timeout = { ok: false }
  process.stdout.write(JSON.stringify(results) + "\n")
  process.exit(1)
}, 30_000)

const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)
    ),
  ])

async function check(name, fn) {
  try {
    results[name] = await fn()
  } catch (err) {
    results[name] = { ok: false, error: String(err?.stack ?? err) }
  }
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)

// Wait for `want` JSON items delivered by a live session started at `offset`,
// appending `toAppend` only once the session is established.
async function liveTail(url, offset, live, toAppend) {
  const res = await stream({ url, offset, live })
  const got = []
  let resolveDone
  const done = new Promise((r) => (resolveDone = r))
  const unsubscribe = res.subscribeJson((batch) => {
    got.push(...batch.items)
    if (got.length >= toAppend.length) resolveDone()
  })
  const writer = new DurableStream({ url, contentType: "application/json" })
  // Give the session time to park at the tail so delivery is live, not
  // catch-up. Correctness does not depend on it: the session starts at
  // `offset`, so either way every item must arrive exactly once, in order.
  await new Promise((r) => setTimeout(r, 200))
  for (const item of toAppend) await writer.append(JSON.stringify(item))
  await withTimeout(done, 10_000, `${live} delivery`)
  unsubscribe()
  res.cancel()
  return got
}

await check("create_append_catchup", async () => {
  const url = urlOf("json")
  const handle = await DurableStream.create({ url, contentType: "application/json" })
  for (const i of [1, 2, 3]) await handle.append(JSON.stringify({ n: i }))
  const res = await stream({ url, offset: "-1", live: false })
  const items = await res.json()
  return {
    ok: same(items, [{ n: 1 }, { n: 2 }, { n: 3 }]) && res.upToDate,
    items,
    offset: res.offset,
  }
})

await check("resume_from_offset", async () => {
  const url = urlOf("json")
  const first = await stream({ url, offset: "-1", live: false })
  await first.json()
  const saved = first.offset
  const handle = new DurableStream({ url, contentType: "application/json" })
  await handle.append(JSON.stringify({ n: 4 }))
  await handle.append(JSON.stringify({ n: 5 }))
  const res = await stream({ url, offset: saved, live: false })
  const items = await res.json()
  const again = await stream({ url, offset: res.offset, live: false })
  const none = await again.json()
  return {
    ok: same(items, [{ n: 4 }, { n: 5 }]) && none.length === 0 && saved < res.offset,
    items,
    saved,
    next: res.offset,
  }
})

await check("long_poll_tail", async () => {
  const url = urlOf("json")
  const head = await DurableStream.head({ url })
  const items = [{ lp: 1 }, { lp: 2 }]
  const got = await liveTail(url, head.offset, "long-poll", items)
  return { ok: same(got, items), got }
})

await check("sse_tail", async () => {
  const url = urlOf("json")
  const head = await DurableStream.head({ url })
  const items = [{ sse: 1 }, { sse: 2 }, { sse: 3 }]
  const got = await liveTail(url, head.offset, "sse", items)
  return { ok: same(got, items), got }
})

await check("sse_catchup_from_start", async () => {
  const url = urlOf("json")
  const res = await stream({ url, offset: "-1", live: "sse" })
  const got = []
  let resolveDone
  const done = new Promise((r) => (resolveDone = r))
  const unsubscribe = res.subscribeJson((batch) => {
    got.push(...batch.items)
    if (batch.upToDate) resolveDone()
  })
  await withTimeout(done, 10_000, "sse catch-up")
  unsubscribe()
  res.cancel()
  return { ok: got.length === 10 && same(got[0], { n: 1 }), count: got.length }
})

await check("text_stream_bytes", async () => {
  const url = urlOf("text")
  const handle = await DurableStream.create({ url, contentType: "text/plain" })
  await handle.append("hello ")
  await handle.append("wörld")
  const res = await stream({ url, offset: "-1", live: false })
  const text = await res.text()
  return { ok: text === "hello wörld", text }
})

await check("idempotent_producer", async () => {
  const url = urlOf("producer")
  const handle = await DurableStream.create({ url, contentType: "application/json" })
  const errors = []
  const producer = new IdempotentProducer(handle, `${prefix}-p1`, {
    autoClaim: true,
    onError: (err) => errors.push(String(err)),
  })
  for (let i = 0; i < 200; i++) producer.append(JSON.stringify({ i }))
  await producer.flush()
  await producer.close()
  const res = await stream({ url, offset: "-1", live: false })
  const items = await res.json()
  const inOrder = items.every((item, idx) => item.i === idx)
  return {
    ok: errors.length === 0 && items.length === 200 && inOrder && res.streamClosed,
    count: items.length,
    inOrder,
    closed: res.streamClosed,
    errors,
  }
})

await check("close_and_observe", async () => {
  const url = urlOf("closing")
  const handle = await DurableStream.create({ url, contentType: "application/json" })
  await handle.append(JSON.stringify({ last: false }))
  const closed = await handle.close({ body: JSON.stringify({ last: true }) })
  let rejected = false
  try {
    await handle.append(JSON.stringify({ late: true }))
  } catch {
    rejected = true
  }
  const res = await stream({ url, offset: "-1", live: false })
  const items = await res.json()
  return {
    ok: rejected && res.streamClosed && items.length === 2 && closed.finalOffset === res.offset,
    items,
    rejected,
    finalOffset: closed.finalOffset,
    offset: res.offset,
  }
})

clearTimeout(hardStop)
process.stdout.write(JSON.stringify(results) + "\n")
process.exit(Object.values(results).every((r) => r.ok) ? 0 : 1)
