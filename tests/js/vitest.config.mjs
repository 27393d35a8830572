// The suite's own 5 s per-test default measures the test runner more than the
// server on a loaded machine (one case checks 100 KiB byte by byte with
// `expect`); the assertions are unchanged, only the time allowed grows.
export default {
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
}
