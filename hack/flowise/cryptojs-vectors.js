// Generates test vectors for Flowise's stored credential format with the crypto-js that Flowise
// itself ships, so credbridge's decryption is checked against the real implementation.
//   NODE_PATH=~/.cache/credbridge/flowise/3.1.4/node_modules node hack/flowise/cryptojs-vectors.js \
//     > tests/unit/data/flowise-cryptojs-vectors.json
// Flowise encrypts with CryptoJS.AES.encrypt(JSON.stringify(plainDataObj), key).toString().
const CryptoJS = require('crypto-js')

const cases = [
    { key: 'k3y with space', plain: { openAIApiKey: 'sk-test-1' } },
    { key: 'WJxw1S3iH7p5l6q0cO7pW4r5sO3mV0uY', plain: { user: 'app', password: 'p@ss:word/with?chars' } },
    { key: 'WJxw1S3iH7p5l6q0cO7pW4r5sO3mV0uY\n', plain: { note: 'a key file with a trailing newline is another key' } },
    { key: 'ключ-ünïcødé', plain: { text: 'ünïcødé ✓ 日本語', empty: '' } },
    { key: 'short', plain: {} },
    { key: 'long-value', plain: { blob: 'x'.repeat(5000) } },
    { key: 'numbers', plain: { port: 5432, ssl: true, nested: { a: [1, 2] } } }
]
const vectors = cases.map((c) => {
    const plaintext = JSON.stringify(c.plain)
    const encryptedData = CryptoJS.AES.encrypt(plaintext, c.key).toString()
    const back = CryptoJS.AES.decrypt(encryptedData, c.key).toString(CryptoJS.enc.Utf8)
    if (back !== plaintext) throw new Error('round trip failed')
    return { key: c.key, plaintext, encryptedData }
})
process.stdout.write(
    JSON.stringify(
        {
            description:
                "Flowise credential encryptedData made by crypto-js " +
                require('crypto-js/package.json').version +
                ' (CryptoJS.AES.encrypt(JSON.stringify(plainDataObj), key).toString()); ' +
                'regenerate with hack/flowise/cryptojs-vectors.js',
            vectors
        },
        null,
        2
    ) + '\n'
)
