"""Send a JPEG to the dnx ensemble, print the top 5: python classify_bytes.py cat.jpg [HOST:PORT] [MODEL]"""
import sys, numpy as np, tritonclient.http as httpclient  # noqa: E401 - the example is 10 lines; pip install "tritonclient[http]"

url, model = (sys.argv[2:] + ["127.0.0.1:8000", "densenet121"][len(sys.argv[2:]):])[:2]
image = httpclient.InferInput("image", [1, 1], "BYTES")  # the file as it is: the server decodes it
image.set_data_from_numpy(np.array([[open(sys.argv[1], "rb").read()]], dtype=object))
top5 = httpclient.InferRequestedOutput("probabilities", class_count=5)  # "probability:index:label"
for entry in httpclient.InferenceServerClient(url).infer(model, [image], outputs=[top5]).as_numpy("probabilities")[0]:
    prob, index, label = entry.decode().split(":", 2)
    print(f"{100 * float(prob):6.2f}%  {label} ({index})")
