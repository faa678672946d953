/**
 * What the daemon's three listeners (the embedded MQTT broker, /healthz + /metrics, the OpenAI API)
 * share: binding a server, and writing a host into a URL. Each explains a failed bind in its own
 * words (which setting to change), so listen() hands back the socket error as it came.
 */
import type { Server } from 'node:net';

/** Binds `server` to host:port; rejects with the bind error (EADDRINUSE, EACCES, EADDRNOTAVAIL, ...). */
export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

/** A host as it goes into a URL: an IPv6 address in brackets. */
export const urlHost = (host: string): string => (host.includes(':') ? `[${host}]` : host);

/** The user name in a URL's userinfo ('' when there is none, or the URL does not parse: its connection reports that). */
export function urlUsername(url: string | undefined): string {
  try {
    return url === undefined ? '' : new URL(url).username;
  } catch {
    return '';
  }
}
