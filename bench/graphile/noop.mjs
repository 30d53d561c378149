// graphile-worker 0.18 doing no-op jobs, the baseline of issue #11: JOBS jobs added one at a
// time by PRODUCERS concurrent producers while a runner with concurrency CONCURRENCY works
// them off; prints jobs/s from the first add to the last completion.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/graphile_bench node noop.mjs
import { Logger, makeWorkerUtils, run } from "graphile-worker";

// Silent: a log line per job would cost more than the no-op job itself.
const logger = new Logger(() => () => {});

const connectionString = process.env.DATABASE_URL;
const JOBS = Number(process.env.JOBS ?? 10000);
const PRODUCERS = Number(process.env.PRODUCERS ?? 20);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 10);

const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();

let done = 0;
let finished;
const allDone = new Promise((resolve) => (finished = resolve));
const runner = await run({
  connectionString,
  concurrency: CONCURRENCY,
  noHandleSignals: true,
  pollInterval: 1000,
  logger,
  taskList: {
    noop: async () => {
      done += 1;
      if (done === JOBS) finished();
    },
  },
});

const start = process.hrtime.bigint();
let next = 0;
await Promise.all(
  Array.from({ length: PRODUCERS }, async () => {
    while (next < JOBS) {
      next += 1;
      await utils.addJob("noop", {});
    }
  }),
);
await allDone;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(
  JSON.stringify({ jobs: JOBS, producers: PRODUCERS, concurrency: CONCURRENCY, seconds, jobs_per_s: JOBS / seconds }),
);
await runner.stop();
await utils.release();
