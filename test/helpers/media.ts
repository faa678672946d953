// Image and audio content parts as a device or an OpenAI client sends them (the multimodal tests).

/** A 1x1 PNG. */
export const PNG_1X1 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';

/** A WAV file's bytes (RIFF header, then `samples` 16-bit zero samples), base64: input_audio's data. */
export function wavBase64(samples = 800): string {
  const data = samples * 2;
  const b = Buffer.alloc(44 + data);
  b.write('RIFF', 0);
  b.writeUInt32LE(36 + data, 4);
  b.write('WAVEfmt ', 8);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(16000, 24);
  b.writeUInt32LE(32000, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write('data', 36);
  b.writeUInt32LE(data, 40);
  return b.toString('base64');
}

export const imagePart = (base64 = PNG_1X1, type = 'image/png') => ({ type: 'image_url' as const, image_url: { url: `data:${type};base64,${base64}` } });
/** `format` is typed as OpenAI's client types it; a test of a refused format casts. */
export const audioPart = (data = wavBase64(), format: 'wav' | 'mp3' = 'wav') => ({ type: 'input_audio' as const, input_audio: { data, format } });
