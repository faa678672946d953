/** `p`, or `error()` once `ms` have passed (the timer is cleared when `p` settles first). */
export function withDeadline<T>(p: Promise<T>, ms: number, error: () => Error = () => new Error('timed out')): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(error()), Math.max(0, ms));
    }),
  ]);
}
