// Start the npm reference server (@durable-streams/server) for interop tests
// and benchmarks. Prints one line `ref-server listening on http://HOST:PORT`
// on stdout once bound; stops on SIGTERM/SIGINT or when stdin closes.
//
// Usage: node ref-server.mjs [--host 127.0.0.1] [--port 0] [--data-dir DIR]
//                            [--long-poll-timeout-ms 500] [--webhooks]
import { DurableStreamTestServer } from "@durable-streams/server"

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}

const server = new DurableStreamTestServer({
  host: opt("--host", "127.0.0.1"),
  port: Number(opt("--port", "0")),
  dataDir: opt("--data-dir", undefined),
  longPollTimeout: Number(opt("--long-poll-timeout-ms", "30000")),
  webhooks: args.includes("--webhooks"),
  compression: !args.includes("--no-compression"),
})

const url = await server.start()
process.stdout.write(`ref-server listening on ${url}\n`)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(0), 3000)
  try {
    await server.stop()
  } finally {
    clearTimeout(timer)
    process.exit(0)
  }
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
if (args.includes("--exit-on-stdin-close")) {
  process.stdin.on("end", stop)
  process.stdin.on("close", stop)
  process.stdin.resume()
}
