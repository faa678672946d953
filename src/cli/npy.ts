/**
 * NumPy's .npy format, version 1.0, for float32 arrays in C order: what `edgellm trace` writes so
 * that `numpy.load` reads the hidden states and attention without any other tool.
 *
 *   magic "\x93NUMPY", version 1 0, header length (uint16 LE), a Python dict literal padded with
 *   spaces and ended by '\n' so that the data starts at a multiple of 64 bytes, then the data.
 */

/** The bytes of a .npy file holding `data` (little-endian float32) with this shape. */
export function npyFloat32(data: Float32Array, shape: readonly number[]): Buffer {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new RangeError(`shape (${shape.join(', ')}) holds ${count} values, the data ${data.length}`);
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  const prefix = 10; // magic (6) + version (2) + header length (2)
  header += ' '.repeat((64 - ((prefix + header.length + 1) % 64)) % 64) + '\n';
  const out = Buffer.alloc(prefix + header.length + data.length * 4);
  out.write('\x93NUMPY', 0, 'latin1');
  out[6] = 1;
  out[7] = 0;
  out.writeUInt16LE(header.length, 8);
  out.write(header, prefix, 'latin1');
  const body = prefix + header.length;
  for (let i = 0; i < data.length; i++) out.writeFloatLE(data[i]!, body + i * 4);
  return out;
}
