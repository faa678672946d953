/**
 * A one-line status for long operations on a terminal: "label... 12s", redrawn every quarter
 * second on stderr and erased when the work ends. Silent when stderr is not a TTY (pipes, journald).
 */
export async function withStatus<T>(label: string, work: Promise<T>, stream: NodeJS.WriteStream = process.stderr): Promise<T> {
  if (stream.isTTY !== true) return work;
  const started = Date.now();
  const draw = () => stream.write(`\r\x1b[2K${label}... ${Math.floor((Date.now() - started) / 1000)}s`);
  draw();
  const timer = setInterval(draw, 250);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    stream.write('\r\x1b[2K');
  }
}
