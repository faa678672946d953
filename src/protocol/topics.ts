/** Every topic edgellm publishes or subscribes to, from the prefix, node id and fleet group. */

export class Topics {
  constructor(
    readonly prefix: string,
    readonly nodeId: string,
    readonly fleetGroup?: string,
  ) {}

  /** Requests arrive on <prefix>/request/<device>; in a fleet, each goes to one node of the group. */
  requestFilter(): string {
    const filter = `${this.prefix}/request/+`;
    return this.fleetGroup ? `$share/${this.fleetGroup}/${filter}` : filter;
  }

  /**
   * Cancels are never shared: the node that holds the request must see it, and the others ignore an
   * id they do not hold.
   */
  cancelFilter(): string {
    return `${this.prefix}/cancel/+`;
  }

  /** The device id of a request or cancel topic, or undefined for any other topic. */
  deviceOf(topic: string, kind: 'request' | 'cancel'): string | undefined {
    const head = `${this.prefix}/${kind}/`;
    if (!topic.startsWith(head)) return undefined;
    const device = topic.slice(head.length);
    return device === '' || device.includes('/') ? undefined : device;
  }

  /** Where replies go when the request names no Response Topic and no reply_to. */
  response(device: string): string {
    return `${this.prefix}/response/${device}`;
  }

  status(): string {
    return `${this.prefix}/status/${this.nodeId}`;
  }

  metrics(): string {
    return `${this.prefix}/metrics/${this.nodeId}`;
  }
}

/** A topic a client may publish to: not empty, no wildcards, no NUL, within MQTT's 65535 bytes. */
export function isPublishableTopic(topic: string): boolean {
  return topic !== '' && !/[+#\u0000]/.test(topic) && Buffer.byteLength(topic) <= 65535;
}
